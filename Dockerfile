# syntax=docker/dockerfile:1
# Nova in one image: the web server (default command), the RQ worker (`nova worker`) and the
# one-shot `nova init-db` all run from it; docker-compose.yml wires them to redis.
# Layers go from the slowest-changing (Debian packages, ~300 MB of index files) to the
# fastest-changing (Nova's own code), so editing Nova rebuilds only the last, small layers.
FROM debian:bookworm-slim

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/nova/app

# System packages: the same script `make run` uses (engine, Tycho-2 index files, netpbm,
# SourceExtractor, python3-venv, ...). Copied alone so that only a change to it reruns this.
COPY scripts/install-system.sh scripts/install-system.sh
RUN sh scripts/install-system.sh && rm -rf /var/lib/apt/lists/*

# The init process (PID 1): forwards SIGTERM to Nova and reaps the engine's children.
# Not needed by `make run`, so it is not in install-system.sh.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed non-root user; a new named volume at /data takes this directory's owner.
# A bind-mounted data directory must be writable by uid 10001.
RUN groupadd --system --gid 10001 nova \
    && useradd --system --uid 10001 --gid nova --create-home --home-dir /home/nova \
        --shell /usr/sbin/nologin nova \
    && mkdir -p /data \
    && chown nova:nova /data

RUN python3 -m venv /opt/nova/venv \
    && /opt/nova/venv/bin/pip install --quiet --upgrade pip
ENV PATH=/opt/nova/venv/bin:$PATH

# Python dependencies, from setup.cfg only: a stub package lets pip resolve and install them
# now, so that code changes do not download them again. The install is editable: the app
# finds templates/ and static/ beside the nova package (PROJECT_ROOT = /opt/nova/app).
# The postgres extra brings psycopg 3, SQLAlchemy's driver for NOVA_DATABASE_URL=postgresql://
COPY setup.cfg pyproject.toml ./
RUN mkdir nova \
    && touch nova/__init__.py README.md \
    && pip install --quiet -e '.[postgres]' \
    && rm -rf nova README.md

# Nova itself (read-only for the nova user), byte-compiled once here.
COPY README.md ./
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
