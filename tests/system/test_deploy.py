"""The container packaging: Dockerfile, .dockerignore, docker-compose.yml, deploy/Caddyfile,
and the lock files the image and the virtualenv install.

Here the files are read and checked, and every container command (web, worker, init, the
healthchecks, redis) is run on the host, translated from the container's layout:
``/opt/nova/venv/bin/X`` becomes this virtualenv's X (``sys.executable -m X``), ``/data`` a
temporary directory, ``redis:6379`` the test redis. test_compose.py runs the same files in
real containers.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
import requests
import yaml
from rq import Worker
from sqlalchemy.engine import make_url

from nova import gunicorn_config
from nova.config import Settings
from tests.support.paths import REPO
from tests.support.processes import free_port, wait_for

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
CADDYFILE = REPO / "deploy" / "Caddyfile"
CA_DIR = REPO / "deploy" / "ca-certificates"
LOCK = REPO / "requirements.lock"  # the app and the postgres extra: what the image installs
TEST_LOCK = REPO / "requirements-test.lock"  # and the test extra: what the virtualenv installs

APP_SERVICES = ("init", "web", "worker")
CONTAINER_VENV = "/opt/nova/venv"
CONTAINER_DATA = "/data"
CONTAINER_PORT = 8000
HOST_VENV_BIN = Path(sys.executable).parent
# What the tests pretend the operator put in .env.
DOT_ENV = {"NOVA_SECRET_KEY": "test-secret-key-for-the-deploy-tests"}


# --- reading the files -----------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def instruction_args(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK arguments: JSON exec form, else shell form run by sh -c."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(part, str) for part in value), args
        return value
    return ["/bin/sh", "-c", args]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction_args("ENV"):
        for item in shlex.split(args):
            name, sep, value = item.partition("=")
            assert sep, f"use ENV NAME=value, not the legacy form: ENV {args}"
            env[name] = value
    return env


def dockerfile_healthcheck() -> list[str]:
    (args,) = instruction_args("HEALTHCHECK")
    options, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    assert all(option.startswith("--") for option in options.split()), options
    return exec_form(command.strip())


def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing"
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the anchor and the `<<` merges
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = variables.get(name)
        missing = current is None or (op is not None and op.startswith(":") and current == "")
        if op and op.endswith("?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def compose_environment(name: str, variables: Mapping[str, str] = DOT_ENV) -> dict[str, str]:
    environment = service(name).get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: interpolate(str(value), variables) for key, value in environment.items()}


def healthcheck_argv(test: list[str] | str) -> list[str]:
    """A compose healthcheck ``test`` as the argv the engine runs."""
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    assert kind in ("CMD", "CMD-SHELL"), f"healthcheck test must be CMD or CMD-SHELL: {test}"
    return rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"bad duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# --- translating container commands to the host ----------------------------------------------


def host_command(argv: list[str]) -> list[str]:
    """The container's argv with the image's venv replaced by this test's virtualenv."""
    program = argv[0].removeprefix(f"{CONTAINER_VENV}/bin/")
    # In the image these resolve through PATH=/opt/nova/venv/bin (or are absolute there).
    assert (HOST_VENV_BIN / program).exists(), f"{program} is not installed in the virtualenv"
    if program in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    if program in ("nova", "gunicorn"):
        return [sys.executable, "-m", program, *argv[1:]]
    raise AssertionError(f"no host translation for the container command {argv}")


def host_value(value: str, data_dir: Path, redis_url: str) -> str:
    """Container paths and host names in an environment value, as they are on this host."""
    if value == CONTAINER_DATA or value.startswith(CONTAINER_DATA + "/"):
        value = str(data_dir) + value[len(CONTAINER_DATA) :]
    value = value.replace(f"/{CONTAINER_DATA}/", f"/{data_dir}/")  # sqlite:////data/...
    test_redis = urlparse(redis_url)
    return value.replace("redis://redis:6379", f"redis://{test_redis.netloc}")


def host_env(name: str, data_dir: Path, redis_url: str) -> dict[str, str]:
    """The environment of compose service ``name``: the image's ENV, then compose's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    container = dockerfile_env() | compose_environment(name)
    for key, value in container.items():
        if key.startswith("NOVA_"):
            env[key] = host_value(value, data_dir, redis_url)
    return env


@contextmanager
def running(argv: list[str], env: Mapping[str, str], log_dir: Path) -> Iterator[Any]:
    """Start ``argv`` (stdout and stderr to files); always stop it and its children."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout = (log_dir / "stdout").open("wb")
    stderr = (log_dir / "stderr").open("wb")
    process = subprocess.Popen(
        argv, env=dict(env), stdout=stdout, stderr=stderr, start_new_session=True
    )
    process.log_dir = log_dir  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # anything left in its process group
        except ProcessLookupError:
            pass
        process.wait(timeout=60)
        stdout.close()
        stderr.close()


def logs(process: Any) -> str:
    directory: Path = process.log_dir
    return "\n".join(
        f"--- {name}:\n" + (directory / name).read_text(errors="replace")[-3000:]
        for name in ("stdout", "stderr")
    )


def run(
    argv: list[str], env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=timeout)


def init_db(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Run the compose ``init`` service's command; return its environment."""
    env = host_env("init", tmp_path / "data", redis_url)
    result = run(host_command(service("init")["command"]), env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database ready" in result.stdout
    return env


# --- the Dockerfile --------------------------------------------------------------------------


def test_dockerfile_installs_the_system_packages_with_the_make_run_script() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "debian:bookworm-slim AS base")
    script = "scripts/install-system.sh"
    assert (REPO / script).is_file()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(rf"^\t(sh )?{re.escape(script)}$", makefile, re.MULTILINE), (
        "make run no longer uses the same script"
    )
    runs = [i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and script in args]
    assert runs, "the Dockerfile does not run scripts/install-system.sh"
    copies = [i for i, (kw, args) in enumerate(instructions) if kw == "COPY"]
    # The script alone is copied first, so that the package layer is cached.
    first_copy = instructions[copies[0]][1].split()
    assert first_copy[0] == script and copies[0] < runs[0], instructions[copies[0]]
    assert all(copies[0] == i or runs[0] < i for i in copies), "code is copied before packages"
    pip_installs = [i for i, (kw, args) in enumerate(instructions) if "pip install" in args]
    assert pip_installs and runs[0] < pip_installs[0]


def test_dockerfile_venv_editable_install_and_layer_order() -> None:
    instructions = dockerfile()
    runs = " && ".join(args for kw, args in instructions if kw == "RUN")
    assert f"python3 -m venv {CONTAINER_VENV}" in runs
    assert re.search(r"pip install .*-e '?\.", runs), "the project must be installed editable"
    assert f"PATH={CONTAINER_VENV}/bin:$PATH" in [
        f"{k}={v}" for k, v in dockerfile_env().items()
    ], "the venv's nova and gunicorn must be on PATH"
    (workdir,) = instruction_args("WORKDIR")
    # The app finds templates/ and static/ beside the nova package (PROJECT_ROOT).
    copied = {}
    for index, (kw, args) in enumerate(instructions):
        if kw == "COPY":
            *sources, destination = args.split()
            for source in sources:
                copied[source] = (index, destination)
    for name in ("nova", "templates", "static"):
        assert name in copied, f"{name}/ is not copied into the image"
        assert copied[name][1].rstrip("/") in (name, f"{workdir}/{name}"), copied[name]
    # Dependencies (setup.cfg) are installed before the code is copied, the code last.
    assert copied["setup.cfg"][0] < copied["nova"][0]
    assert max(index for index, _ in copied.values()) == copied["nova"][0]


def test_dockerfile_user_init_healthcheck_volume_env() -> None:
    instructions = dockerfile()
    keywords = [kw for kw, _ in instructions]
    (user,) = instruction_args("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    runs = " ".join(args for kw, args in instructions if kw == "RUN")
    uid = re.search(rf"useradd [^&]*--uid (\d+)[^&]* {re.escape(user)}\b", runs)
    assert uid and int(uid.group(1)) >= 1000, "the user needs a fixed non-root uid"
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")

    (entrypoint,) = instruction_args("ENTRYPOINT")
    init = exec_form(entrypoint)
    assert Path(init[0]).name in ("tini", "dumb-init"), init
    assert re.search(rf"apt-get install [^&]*\b{Path(init[0]).name}\b", runs), (
        f"{init[0]} is not installed"
    )
    if Path(init[0]).name == "tini":
        assert init[1:] == ["--"], "tini signals only its child (RQ warm shutdown), keep no -g"

    healthcheck = dockerfile_healthcheck()
    assert any(f"127.0.0.1:{CONTAINER_PORT}/" in part for part in healthcheck), healthcheck
    assert "/data" in instruction_args("VOLUME")[0].replace('"', "").strip("[] ").split()
    assert instruction_args("EXPOSE") == [str(CONTAINER_PORT)]
    env = dockerfile_env()
    assert env["NOVA_ENV"] == "production"
    assert env["NOVA_DATA_DIR"] == CONTAINER_DATA
    assert env["NOVA_BIND"] == "0.0.0.0"
    assert env.get("PYTHONUNBUFFERED") == "1", "logs must reach stdout at once"

    (cmd,) = instruction_args("CMD")
    command = exec_form(cmd)
    assert command[0] == "gunicorn" and command[-1] == "nova.wsgi:app", command
    joined = " ".join(command)
    assert f"--bind 0.0.0.0:{CONTAINER_PORT}" in joined
    # Workers, threads, timeouts and the access log come from the one gunicorn config that
    # `nova up` uses too.
    assert "--config python:nova.gunicorn_config" in joined
    assert (gunicorn_config.workers, gunicorn_config.accesslog) == (2, "-")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (relative to the build context) is left out by the patterns."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            ".*"
            if token == "**"
            else "[^/]*"
            if token == "*"
            else "[^/]"
            if token == "?"
            else re.escape(token)
            for token in re.split(r"(\*\*|\*|\?)", pattern)
        )
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_local_state_out_and_the_sources_in() -> None:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing"
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (
        ".git/config",
        ".venv/bin/python",
        "data/nova.sqlite",
        "test-artifacts/x.log",
        ".pytest_cache/v",
        ".ruff_cache/x",
        "nova/__pycache__/cli.cpython-311.pyc",
        "bench/results.json",
        "nova.egg-info/PKG-INFO",
        ".env",
    ):
        assert _ignored(path, patterns), f"{path} would be sent to the builder"
    for _, args in (i for i in dockerfile() if i[0] == "COPY"):
        *sources, _ = args.split()
        if sources[0].startswith("--from="):
            continue  # from another build stage, not from the context
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for module in (REPO / "nova").rglob("*.py"):
        assert not _ignored(str(module.relative_to(REPO)), patterns), module
    for template in (REPO / "templates").iterdir():
        assert not _ignored(str(template.relative_to(REPO)), patterns), template


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line of a lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[canonical_name(match.group(1))] = match.group(2)
    return pins


def setup_cfg_requirements(*extras: str) -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in extras:
        lines += config["options.extras_require"][extra].splitlines()
    return {canonical_name(re.split(r"[\[<>=!~; ]", line.strip())[0]) for line in lines if line}


def test_locks_pin_setup_cfg_agree_and_are_what_the_virtualenv_runs() -> None:
    app, test = lock_pins(LOCK), lock_pins(TEST_LOCK)
    assert setup_cfg_requirements("postgres") <= set(app), "requirements.lock is stale: make lock"
    assert setup_cfg_requirements("postgres", "test") <= set(test), "stale: make lock"
    assert "pytest" not in app and "playwright" not in app, "test tools stay out of the image"
    # The image's versions are the tested ones (the app's lock is compiled under the other).
    assert {name: test.get(name) for name in app} == app
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^lock:$", makefile, re.MULTILINE), "make lock refreshes both"
    assert "pip install --quiet -r requirements-test.lock" in makefile
    installed = {
        canonical_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    differing = {n: (v, installed.get(n)) for n, v in test.items() if installed.get(n) != v}
    assert not differing, f"the virtualenv is not the lock (run make venv): {differing}"


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """(FROM arguments, the stage's instructions) per build stage."""
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, args in dockerfile():
        if keyword == "FROM":
            stages.append((args, []))
        else:
            stages[-1][1].append((keyword, args))
    return stages


def test_dockerfile_builds_offline_installs_the_lock_and_trusts_local_cas() -> None:
    # A `# syntax=` line makes BuildKit pull a frontend image first, which fails offline.
    assert "# syntax=" not in DOCKERFILE.read_text()
    stages = dockerfile_stages()
    assert [args for args, _ in stages] == ["debian:bookworm-slim AS base", "base AS build", "base"]
    (_, base), (_, build), (_, final) = stages
    build_runs = " && ".join(args for kw, args in build if kw == "RUN")
    assert ("COPY", "requirements.lock ./") in build
    assert "pip install --quiet --no-deps -r requirements.lock" in build_runs
    assert "pip uninstall --quiet --yes pip setuptools" in build_runs, "no installer at run time"
    # The image is the base, the finished virtualenv and the code: pip never runs in it.
    assert ("COPY", f"--from=build {CONTAINER_VENV} {CONTAINER_VENV}") in final
    assert not any("pip" in args for kw, args in final if kw == "RUN")
    # deploy/ca-certificates/*.crt: trusted before the build's pip runs, and at run time.
    copy = ("COPY", "deploy/ca-certificates/ /usr/local/share/ca-certificates/nova/")
    assert copy in base
    assert "update-ca-certificates" in base[base.index(copy) + 1][1]
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    env = dockerfile_env()
    assert env["PIP_CERT"] == env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == bundle
    assert (CA_DIR / "README.md").is_file()
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    assert "deploy/ca-certificates/*" in gitignore
    assert "!deploy/ca-certificates/README.md" in gitignore
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/ca-certificates/proxy.crt"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "local certificates must never be committed"


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_app_services_share_one_image_environment_and_data_volume() -> None:
    text = COMPOSE_FILE.read_text()
    assert re.search(r"^x-nova: &nova$", text, re.MULTILINE), "the shared x-nova anchor"
    data = compose()
    for name in APP_SERVICES:
        spec = service(name)
        assert spec.get("build") == ".", (name, spec.get("build"))
        assert spec.get("image") == "nova:latest", (name, spec.get("image"))
        assert f"{CONTAINER_DATA}" in [v.split(":")[1] for v in spec.get("volumes", [])]
        assert "nova-data:/data" in spec["volumes"], name
        assert "container_name" not in spec, name
        env = compose_environment(name)
        assert env["NOVA_REDIS_URL"] == "redis://redis:6379/0"
        assert env["NOVA_SECRET_KEY"] == DOT_ENV["NOVA_SECRET_KEY"]
        url = make_url(env["NOVA_DATABASE_URL"])
        assert url.get_backend_name() == "sqlite" and url.database == "/data/nova.sqlite"
    assert "nova-data" in data["volumes"]
    # Commented-out extra index directory, documented with its NOVA_INDEX_DIRS value.
    assert re.search(r"^\s*# - \./indexes:/indexes:ro$", text, re.MULTILINE)
    assert "NOVA_INDEX_DIRS=/usr/share/astrometry:/indexes" in text
    assert compose_environment("web")["NOVA_INDEX_DIRS"] == "/usr/share/astrometry"


def test_compose_requires_a_secret_key() -> None:
    with pytest.raises(KeyError, match="set NOVA_SECRET_KEY"):
        compose_environment("web", variables={})
    assert compose_environment("web", {"NOVA_SECRET_KEY": "k"})["NOVA_SECRET_KEY"] == "k"
    variables = DOT_ENV | {"NOVA_DATABASE_URL": "postgresql://nova:nova@postgres/nova"}
    assert compose_environment("worker", variables)["NOVA_DATABASE_URL"].startswith("postgresql")


def test_compose_startup_order_scaling_and_shutdown() -> None:
    init = service("init")
    assert init["command"] == ["nova", "init-db"]
    assert init.get("restart", "no") == "no"
    assert init["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    for name in ("web", "worker"):
        depends = service(name)["depends_on"]
        assert depends["init"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
    web = service("web")
    assert "command" not in web, "web runs the image's CMD (gunicorn)"
    assert web["ports"] == ["${NOVA_PORT:-8000}:8000"]
    worker = service("worker")
    assert worker["command"] == ["nova", "worker"]
    assert "ports" not in worker and "container_name" not in worker, "worker must scale"
    assert "deploy" not in worker or "replicas" not in worker["deploy"]
    solve_limit = int(compose_environment("worker")["NOVA_SOLVE_TIME_LIMIT"])
    default = Settings.from_env(
        {"NOVA_ENV": "production", "NOVA_SECRET_KEY": "x", "NOVA_DATA_DIR": "/nonexistent"}
    ).solve_time_limit
    assert solve_limit == default
    assert duration_seconds(worker["stop_grace_period"]) > solve_limit


def test_compose_redis_postgres_and_https_services(tmp_path: Path) -> None:
    data = compose()
    redis_service = service("redis")
    assert redis_service["image"] == "redis:7"
    assert " ".join(redis_service["command"]).endswith("--appendonly yes")
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis_service["volumes"])

    postgres = service("postgres")
    assert postgres["profiles"] == ["postgres"] and postgres["image"] == "postgres:15"
    assert "pg_isready" in " ".join(healthcheck_argv(postgres["healthcheck"]["test"]))
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    pg = postgres["environment"]
    documented = make_url("postgresql://nova:nova@postgres/nova")
    assert (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]) == (
        documented.username,
        documented.password,
        documented.database,
    )
    assert "NOVA_DATABASE_URL=postgresql://nova:nova@postgres/nova" in COMPOSE_FILE.read_text()
    # The image must have the driver SQLAlchemy opens postgresql:// URLs with.
    driver = documented.get_dialect().driver
    package = {"psycopg": r"psycopg\[binary\]", "psycopg2": "psycopg2-binary"}[driver]
    extras = configparser.ConfigParser()
    extras.read(REPO / "setup.cfg")
    assert re.search(package, extras["options.extras_require"]["postgres"]), driver
    assert driver in lock_pins(LOCK), "the image installs requirements.lock"

    caddy = service("caddy")
    assert caddy["profiles"] == ["https"] and caddy["image"] == "caddy:2"
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert {"80:80", "443:443"} <= set(caddy["ports"])
    caddyfile = CADDYFILE.read_text()
    assert re.search(r"^\{\$NOVA_DOMAIN:localhost\} \{$", caddyfile, re.MULTILINE)
    assert re.search(r"^\s*reverse_proxy web:8000$", caddyfile, re.MULTILINE)
    assert re.search(r"^\s*tls internal$", caddyfile, re.MULTILINE)
    for name in ("postgres", "caddy"):
        for volume in service(name)["volumes"]:
            source = volume.split(":")[0]
            assert source.startswith("./") or source in data["volumes"], volume


# --- the container commands, run on the host -------------------------------------------------


def test_web_command_serves_logs_to_stdout_and_passes_its_healthchecks(
    tmp_path: Path, redis_url: str
) -> None:
    init_db(tmp_path, redis_url)
    (cmd,) = instruction_args("CMD")
    argv = exec_form(cmd)
    port = free_port()
    bind = f"0.0.0.0:{CONTAINER_PORT}"
    assert bind in argv
    argv = [f"127.0.0.1:{port}" if part == bind else part for part in argv]
    env = host_env("web", tmp_path / "data", redis_url)
    assert env["NOVA_ENV"] == "production"  # so the compose secret key is really needed

    with running(host_command(argv), env, tmp_path / "web") as web:

        def answers() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        # Fails at once, not after the timeout, when gunicorn exits (e.g. a bad app path).
        assert wait_for(lambda: web.poll() is not None or answers(), 60), logs(web)
        assert web.poll() is None, logs(web)

        def healthcheck(test: list[str], target: int) -> subprocess.CompletedProcess:
            assert any(f"127.0.0.1:{CONTAINER_PORT}" in part for part in test), test
            test = [part.replace(f":{CONTAINER_PORT}/", f":{target}/") for part in test]
            return run(host_command(test), env, timeout=30)

        compose_test = healthcheck_argv(service("web")["healthcheck"]["test"])
        for test in (compose_test, dockerfile_healthcheck()):
            result = healthcheck(test, port)
            assert result.returncode == 0, result.stderr
            # ... and it is not always healthy: nothing listens on another free port.
            assert healthcheck(test, free_port()).returncode != 0

        def access_logged() -> bool:
            return '"GET / HTTP/1.1" 200' in (web.log_dir / "stdout").read_text()

        assert wait_for(access_logged, 60), "the access log is not on stdout\n" + logs(web)
        web.send_signal(signal.SIGTERM)
        assert web.wait(timeout=30) == 0, logs(web)


def test_init_then_worker_registers_passes_its_healthcheck_and_stops_on_sigterm(
    tmp_path: Path, redis_url: str
) -> None:
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    env = init_db(tmp_path, redis_url)
    database = make_url(env["NOVA_DATABASE_URL"]).database
    assert database == str(tmp_path / "data" / "nova.sqlite") and Path(database).is_file()
    # Safe to repeat (every `docker compose up` runs it again).
    init_db(tmp_path, redis_url)

    health = host_command(healthcheck_argv(service("worker")["healthcheck"]["test"]))
    assert run(health, env).returncode != 0, "healthy before any worker runs"

    env = host_env("worker", tmp_path / "data", redis_url)
    with running(host_command(service("worker")["command"]), env, tmp_path / "worker") as worker:

        def registered() -> bool:
            return any(w.pid == worker.pid for w in Worker.all(connection=connection))

        assert wait_for(lambda: worker.poll() is not None or registered(), 60), logs(worker)
        assert worker.poll() is None, logs(worker)
        result = run(health, env)
        assert result.returncode == 0, result.stdout + result.stderr
        # What `docker compose stop` does (tini passes SIGTERM on): an idle worker exits now.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, logs(worker)
    assert not registered(), "the worker did not unregister"
    assert run(health, env).returncode != 0


def test_redis_command_and_healthcheck(tmp_path: Path) -> None:
    redis_service = service("redis")
    command = redis_service["command"]
    assert shutil.which(command[0]), f"{command[0]} is not installed"
    port = free_port()
    argv = [*command, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    with running(argv, os.environ, tmp_path / "redis") as server:
        test = healthcheck_argv(redis_service["healthcheck"]["test"])
        test = [test[0], "-h", "127.0.0.1", "-p", str(port), *test[1:]]

        def pong() -> bool:
            result = run(test, os.environ, timeout=10)
            return result.returncode == 0 and result.stdout.strip() == "PONG"

        assert wait_for(pong, 60), logs(server)
        client = redis.Redis(port=port, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("persisted", "1")
        assert wait_for(lambda: any(tmp_path.glob("appendonly*")), 60), "no append-only file"
    assert run(test, os.environ, timeout=10).stdout.strip() != "PONG"
