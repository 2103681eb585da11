#!/bin/sh
# Install the Debian packages Nova needs (with --test, also those its tests need): the astrometry.net engine, every Tycho-2 index
# package (field widths ~0.4 deg to ~33 deg and beyond), redis, and the image tools the
# pipeline calls. Used by `make run`, `make test`, .ci/run and the Dockerfile. Idempotent:
# packages already present are not downloaded again.
set -eu

PACKAGES="
astrometry.net
python3-astrometry
astrometry-data-tycho2-07
astrometry-data-tycho2-08
astrometry-data-tycho2-09
astrometry-data-tycho2-10-19
netpbm
file
libcfitsio-bin
source-extractor
redis-server
python3-venv
make
procps
ca-certificates
fonts-dejavu-core
"

# `--test` adds what the test suite needs besides: a PostgreSQL server (the suite runs on
# SQLite and on PostgreSQL), a headless browser for the page tests, and the tools the
# network tests use (ip for the two-host test, openssl for a throw-away certificate), and
# wrk, the load tool of the load test. Docker (the engine, Compose v2, a running dockerd)
# for the container tests comes from install-docker.sh, run after the packages.
TEST=""
if [ "${1:-}" = "--test" ]; then
    TEST=1
    PACKAGES="$PACKAGES postgresql chromium iproute2 openssl wrk"
fi

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "install-system: all system packages present"
elif [ "$(id -u)" != "0" ]; then
    echo "install-system: missing packages:$missing" >&2
    echo "install-system: run as root (or: sudo $0)" >&2
    exit 1
else
    echo "install-system: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends keeps the image small; what the pipeline needs is listed above.
    apt-get install -y -qq --no-install-recommends $missing
fi

if [ -n "$TEST" ]; then
    sh "$(dirname "$0")/install-docker.sh"
fi
