#!/bin/sh
# As the official image: a server started without a configuration file listens on every
# interface and, with no password set, would refuse clients from other hosts (protected
# mode); the official entrypoint turns protected mode off, and so does this one.
set -e
if [ "${1:-}" = "redis-server" ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
