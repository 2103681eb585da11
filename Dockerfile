# Nova in one image: the web server (default command), the RQ worker (`nova worker`), the
# one-shot `nova init-db` and `nova solve FILE...` all run from it; docker-compose.yml wires
# them to redis.
# Three stages: `base` (Debian packages, trusted certificates, the user), `build` (the
# virtualenv, installed by pip from requirements.lock), and the image itself: base, the
# finished virtualenv and Nova's code; pip, its build helpers and caches stay in `build`.
# Layers go from the slowest-changing (Debian packages, ~300 MB of index files) to the
# fastest-changing (Nova's own code), so editing Nova rebuilds only the last, small layers.
FROM debian:bookworm-slim AS base

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/nova/app

# System packages: the same script `make run` uses (engine, Tycho-2 index files, netpbm,
# SourceExtractor, python3-venv, ...), then tini, the init process (PID 1: forwards SIGTERM
# to Nova and reaps the engine's children; `make run` does not need it). One layer, without
# apt's package lists and downloaded packages. Copied alone so only a change to it reruns this.
COPY scripts/install-system.sh scripts/install-system.sh
RUN sh scripts/install-system.sh \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

# Extra certificate authorities (deploy/ca-certificates/*.crt, e.g. a TLS-intercepting
# proxy's): trusted by the build's pip and, at run time, by Nova's URL downloads.
COPY deploy/ca-certificates/ /usr/local/share/ca-certificates/nova/
RUN find /usr/local/share/ca-certificates/nova -type f ! -name '*.crt' -delete \
    && update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# A fixed non-root user; a new named volume at /data takes this directory's owner.
# A bind-mounted data directory must be writable by uid 10001.
RUN groupadd --system --gid 10001 nova \
    && useradd --system --uid 10001 --gid nova --create-home --home-dir /home/nova \
        --shell /usr/sbin/nologin nova \
    && mkdir -p /data \
    && chown nova:nova /data


FROM base AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python dependencies: exactly the versions in requirements.lock (what the tests ran with;
# `make lock` refreshes it), so that code changes do not download them again.
COPY requirements.lock ./
RUN python3 -m venv /opt/nova/venv \
    && /opt/nova/venv/bin/pip install --quiet --no-deps -r requirements.lock

# Nova itself, installed editable from a stub package: the app finds templates/ and static/
# beside the nova package (PROJECT_ROOT = /opt/nova/app), where the last stage copies them.
# Then pip and setuptools leave the virtualenv: nothing at run time installs packages.
COPY setup.cfg pyproject.toml ./
RUN mkdir nova \
    && touch nova/__init__.py README.md \
    && /opt/nova/venv/bin/pip install --quiet --no-deps -e . \
    && /opt/nova/venv/bin/pip uninstall --quiet --yes pip setuptools


FROM base
COPY --from=build /opt/nova/venv /opt/nova/venv
ENV PATH=/opt/nova/venv/bin:$PATH

# Nova's code (read-only for the nova user), byte-compiled once here.
COPY README.md setup.cfg pyproject.toml ./
COPY templates templates/
COPY static static/
COPY nova nova/
RUN python -m compileall -q nova

ENV NOVA_ENV=production \
    NOVA_DATA_DIR=/data \
    NOVA_BIND=0.0.0.0
VOLUME /data
EXPOSE 8000
USER nova

# /healthz answers 200 when the app reaches its database and redis, 503 otherwise.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/nova/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# Logs go to stdout/stderr (`docker compose logs`). Worker class, threads (enough that slow
# clients cannot starve it) and timeouts from nova/gunicorn_config.py, as `nova up`;
# heartbeat files in /dev/shm (memory), not on the overlay filesystem.
CMD ["gunicorn", "--config", "python:nova.gunicorn_config", "--bind", "0.0.0.0:8000", "--worker-tmp-dir", "/dev/shm", "nova.wsgi:app"]
