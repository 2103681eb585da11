#!/bin/sh
# Offline stand-ins for the images that docker-compose.yml and the Dockerfile name, for a
# machine that can reach Debian's package archive but no container registry (the test
# machines): nothing here is ever used in production, where the official images are pulled.
#
#   debian:bookworm-slim  debootstrap --variant=minbase, slimmed as the official image is
#   redis:7, postgres:15, caddy:2   built FROM it with Debian's packages (./redis, ...),
#                         behaving as the official images do where Nova relies on it
#
# An image that already exists locally is kept (reruns take seconds); FORCE=1 rebuilds.
set -eu
cd "$(dirname "$0")"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

have() { [ -z "${FORCE:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have debian:bookworm-slim; then
    echo "offline images: debian:bookworm-slim (debootstrap)"
    root=$(mktemp -d /var/tmp/nova-bookworm.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || {
        tail -30 "$root.log" >&2
        exit 1
    }
    rm -f "$root.log"
    # As the official slim image: no documentation, manuals or translations installed.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
CFG
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"*/ \
        "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb \
        "$root/var/lib/apt/lists/"* "$root/var/log/"*.log
    tar -C "$root" --numeric-owner -c . |
        docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            - debian:bookworm-slim >/dev/null
    rm -rf "$root"
    trap - EXIT
fi

for name in redis:7 postgres:15 caddy:2; do
    if ! have "$name"; then
        echo "offline images: $name (Debian packages, ./${name%%:*})"
        docker build --quiet --tag "$name" "${name%%:*}" >/dev/null
    fi
done
echo "offline images: debian:bookworm-slim redis:7 postgres:15 caddy:2 ready"
