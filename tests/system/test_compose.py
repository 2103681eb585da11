"""The container packaging for real: the image built from the Dockerfile, docker-compose.yml
run unchanged by Docker Compose v2, nova's protocol spoken through the published ports.

test_deploy.py checks the files and runs their commands on the host; this runs them in
containers. Docker must be running (``make test`` runs scripts/install-docker.sh, which
starts dockerd): without it these tests fail, they never skip.

Nothing can be pulled on the test machines, so tests/docker/build-offline-images.sh first
makes debian:bookworm-slim (debootstrap) and stand-ins for redis:7, postgres:15 and caddy:2
from Debian's packages; an image that exists already is kept. The image is built once per
run and every test uses it. One compose project per run (its name is unique), removed with
its volumes at the end. The only override is what a test machine lacks: free host ports for
Caddy (80 and 443 may be taken), set with compose's ``!override``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from astropy.io import fits

from tests.support.figures import record_figure
from tests.support.processes import free_port, wait_for
from tests.support.samples import SolveSamples
from tests.system.test_deploy import COMPOSE_FILE, DOT_ENV, REPO

pytestmark = pytest.mark.engine

IMAGE = "nova:latest"  # the name docker-compose.yml gives the app services' image
BUILT_HERE = "nova.built-by=tests/system/test_compose.py"
OFFLINE_IMAGES = REPO / "tests" / "docker" / "build-offline-images.sh"
CA_DIR = REPO / "deploy" / "ca-certificates"
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
PROFILES = ("postgres", "https")
POSTGRES_URL = "postgresql://nova:nova@postgres/nova"  # the one docker-compose.yml documents
# apod4: Ursa Major, ~34 degrees wide; hints as a CI user would give them.
HINTS = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}
APOD4_DEC = 56.71
SOLVE_SECONDS = 300  # the compose file's NOVA_SOLVE_TIME_LIMIT
# Every healthcheck in docker-compose.yml first runs 30 s after a container starts.
UP_SECONDS = 300


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="session")
def nova_image() -> str:
    """The image, built from this repository's Dockerfile once per run."""
    assert shutil.which("docker"), "docker is not installed (scripts/install-docker.sh)"
    info = docker("info", check=False, timeout=60)
    assert info.returncode == 0, (
        "dockerd does not answer; scripts/install-docker.sh starts it\n" + info.stderr
    )
    assert "v2." in docker("compose", "version").stdout, "Compose v2 (scripts/install-docker.sh)"
    started = time.monotonic()
    result = subprocess.run(
        ["sh", str(OFFLINE_IMAGES)], capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record_figure(f"offline base and stand-in images ready in {time.monotonic() - started:.0f} s")
    # This machine intercepts TLS: the build's pip trusts what the host trusts besides
    # Debian's authorities (deploy/ca-certificates/README.md).
    for certificate in sorted(HOST_EXTRA_CAS.rglob("*.crt")):
        shutil.copyfile(certificate, CA_DIR / f"host-{certificate.name}")
    started = time.monotonic()
    result = subprocess.run(
        ["docker", "build", "--tag", IMAGE, "--label", BUILT_HERE, str(REPO)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    # The images earlier runs built (untagged now) and their layers: disk, not a cache.
    docker("image", "prune", "--force", "--filter", f"label={BUILT_HERE}")
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    record_figure(
        f"docker build {IMAGE}: {time.monotonic() - started:.0f} s "
        f"({result.stdout.count('Using cache')} cached steps), image {size / 1e9:.2f} GB"
    )
    assert size <= 1.0e9, f"the image is {size / 1e9:.2f} GB; the README promises <= 1.0 GB"
    return IMAGE


# --- nova solve in the image -------------------------------------------------------------------


def test_image_runs_nova_solve_on_mounted_files(
    nova_image: str, solve_samples: SolveSamples, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the image's user (uid 10001) writes the products

    def solve(*args: str) -> subprocess.CompletedProcess:
        mounts = ["-v", f"{solve_samples.directory}:/in:ro", "-v", f"{out}:/out"]
        return docker("run", "--rm", *mounts, nova_image, "nova", "solve", *args, check=False)

    # The README's CI example, plus --wcs.
    result = solve("/in/apod4.fits", "--json", "--wcs", "/out/apod4.wcs")
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = map(json.loads, result.stdout.splitlines())
    assert line["status"] == "solved" and line["file"] == "/in/apod4.fits"
    assert line["calibration"]["dec"] == pytest.approx(APOD4_DEC, abs=0.1)
    assert fits.getheader(out / "apod4.wcs")["CTYPE1"].startswith("RA---TAN")
    result = solve("/in/noise.fits", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["failure_reason"] == "No stars were detected in the image."
    result = solve("/in/cut.fits")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "/in/cut.fits: The FITS file is truncated" in result.stderr


# --- the compose stack -------------------------------------------------------------------------


class Compose:
    """``docker compose`` on docker-compose.yml, for one project with its own ports."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.project = f"novatest{uuid.uuid4().hex[:10]}"
        self.web_port = free_port()
        self.https_port = free_port()
        self.override = work_dir / "test-machine.override.yml"
        self.override.write_text(
            "# What a test machine lacks: free host ports for Caddy (80/443 may be taken).\n"
            "services:\n"
            "  caddy:\n"
            f'    ports: !override ["127.0.0.1:{self.https_port}:443"]\n'
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVA_", "COMPOSE"))}
        self.env |= DOT_ENV | {"NOVA_PORT": str(self.web_port)}
        self.profiles: list[str] = []
        self.base = f"http://127.0.0.1:{self.web_port}"

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        profiles = [arg for name in self.profiles for arg in ("--profile", name)]
        result = self.run(*profiles, *args, timeout=timeout)
        if check:
            assert result.returncode == 0, (
                f"docker compose {' '.join(args)}:\n{result.stdout}{result.stderr}\n"
                + self.run("logs", "--tail", "40").stdout[-6000:]
            )
        return result.stdout

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        files = ["-f", str(COMPOSE_FILE), "-f", str(self.override)]
        command = ["docker", "compose", "--project-directory", str(REPO), "-p", self.project]
        return subprocess.run(
            [*command, *files, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self, *args: str) -> None:
        """Start (or update) the stack and wait until every container is healthy."""
        started = time.monotonic()
        self("up", "--detach", "--wait", "--wait-timeout", str(UP_SECONDS), *args)
        waited = time.monotonic() - started
        record_figure(f"up {' '.join(args) or '(default)'}: healthy in {waited:.0f} s")

    def create_user(self, email: str) -> str:
        output = self("exec", "-T", "web", "nova", "create-user", email)
        match = re.search(r"API key: ([a-z0-9]+)", output)
        assert match, output
        return match.group(1)


@pytest.fixture(scope="module")
def stack(nova_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    compose = Compose(tmp_path_factory.mktemp("compose"))
    try:
        yield compose
    finally:
        compose.profiles = list(PROFILES)  # so that down removes the profiles' containers too
        compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)


class NovaAPI:
    """nova's protocol, as its clients speak it: /api/<endpoint> with a request-json form
    field. Connection errors are retried while the server restarts."""

    def __init__(self, base: str, verify: bool | str = True) -> None:
        self.base = base
        self.verify = verify
        self.session_key = ""

    def call(self, endpoint: str, args: dict[str, Any] | None = None, **files: Path) -> Any:
        data = {"request-json": json.dumps(args)} if args is not None else None
        deadline = time.monotonic() + 120
        while True:
            opened = {name: path.open("rb") for name, path in files.items()}
            try:
                response = requests.post(
                    f"{self.base}/api/{endpoint}",
                    data=data,
                    files=opened or None,
                    timeout=30,
                    verify=self.verify,
                )
                if response.status_code not in (502, 503) or time.monotonic() > deadline:
                    break  # 502/503: Caddy or gunicorn while web restarts
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            finally:
                for handle in opened.values():
                    handle.close()
            time.sleep(1)
        assert response.status_code == 200, (endpoint, response.status_code, response.text)
        return response.json()

    def login(self, key: str) -> None:
        answer = self.call("login", {"apikey": key})
        assert answer["status"] == "success", answer
        self.session_key = answer["session"]

    def upload(self, path: Path, **hints: object) -> int:
        answer = self.call("upload", {"session": self.session_key, **hints}, file=path)
        assert answer["status"] == "success", answer
        return int(answer["subid"])

    def finished_job(self, submission_id: int, timeout: float = SOLVE_SECONDS) -> int:
        """The submission's job once it has ended (success or failure)."""
        job_id: list[int] = []

        def ended() -> bool:
            jobs = self.call(f"submissions/{submission_id}")["jobs"]
            if not jobs or jobs[0] is None:
                return False
            job_id[:] = [jobs[0]]
            return self.call(f"jobs/{jobs[0]}")["status"] in ("success", "failure")

        assert wait_for(ended, timeout, interval=1), f"submission {submission_id} never ended"
        return job_id[0]

    def solve(self, path: Path, **hints: object) -> dict[str, float]:
        job_id = self.finished_job(self.upload(path, **hints))
        assert self.call(f"jobs/{job_id}")["status"] == "success", self.call(f"jobs/{job_id}/info")
        return self.call(f"jobs/{job_id}/calibration")


def astroquery_solves_apod4(base: str, key: str, apod: Path) -> None:
    """astroquery, a real nova client, solves apod4 as a photo and as a star list."""
    from astroquery.astrometry_net import AstrometryNet, conf

    solver = AstrometryNet()
    solver.URL, solver.API_URL = base, base + "/api"
    with conf.set_temp("api_key", key):
        header = solver.solve_from_image(
            str(apod / "apod4.jpg"), force_image_upload=True, solve_timeout=SOLVE_SECONDS, **HINTS
        )
        assert header["CTYPE2"].startswith("DEC--TAN")
        with fits.open(apod / "apod4.xyls") as hdus:
            xs, ys = (list(map(float, hdus[1].data[axis])) for axis in ("X", "Y"))
        header = solver.solve_from_source_list(
            xs, ys, 719, 507, solve_timeout=SOLVE_SECONDS, **HINTS
        )
        assert header["IMAGEW"] == 719 and header["CTYPE1"].startswith("RA---TAN")


def worker_job_counts(stack: Compose) -> dict[str, int]:
    """Jobs each registered RQ worker has finished, by its container's host name."""
    program = (
        "import json, os, redis, rq;"
        "c = redis.Redis.from_url(os.environ['NOVA_REDIS_URL']);"
        "workers = rq.Worker.all(connection=c);"
        "print(json.dumps({w.hostname: w.successful_job_count for w in workers}))"
    )
    return json.loads(stack("exec", "-T", "worker", "python", "-c", program))


def test_stack_solves_scales_survives_restarts_and_keeps_its_data(
    stack: Compose, apod: Path
) -> None:
    stack.up()
    key = stack.create_user("ci@example.org")
    astroquery_solves_apod4(stack.base, key, apod)
    api = NovaAPI(stack.base)
    api.login(key)

    # Two workers on the same redis and database: both take jobs.
    stack.up("--scale", "worker=2")
    containers = stack("ps", "--quiet", "worker").split()
    assert len(containers) == 2, containers
    # Different hints per upload: the same file with the same hints would reuse the first solve.
    photo = apod / "apod4.jpg"
    uploads = [api.upload(photo, **(HINTS | {"scale_lower": 20 + i})) for i in range(6)]
    for submission_id in uploads:
        api.finished_job(submission_id)
    counts = worker_job_counts(stack)
    assert len(counts) == 2 and all(count >= 1 for count in counts.values()), counts
    record_figure(f"jobs per worker with --scale worker=2: {sorted(counts.values())}")

    # Restarts of web, worker and redis while uploads are queued: every one still solves.
    uploads = [api.upload(photo, **(HINTS | {"scale_upper": 41 + i})) for i in range(8)]
    # One service at a time: a single `restart web worker redis` was seen to hang after
    # restarting all three (Compose v2.40 with Debian's dockerd 20.10).
    for name in ("redis", "worker", "web"):
        stack("restart", name, timeout=120)
    started = time.monotonic()
    jobs = [api.finished_job(submission_id) for submission_id in uploads]
    for job_id in jobs:
        assert api.call(f"jobs/{job_id}")["status"] == "success", api.call(f"jobs/{job_id}/info")
    waited = time.monotonic() - started
    record_figure(f"8 uploads queued across a restart: all solved {waited:.0f} s after it")
    calibration = api.call(f"jobs/{jobs[0]}/calibration")
    assert calibration["dec"] == pytest.approx(APOD4_DEC, abs=0.1)

    # down, then up: users, jobs and results are on the volumes.
    stack("down", "--timeout", "60")
    assert stack("ps", "--all", "--quiet") == ""
    stack.up()
    api.login(key)
    assert api.call(f"jobs/{jobs[0]}/calibration") == calibration
    assert api.call(f"jobs/{jobs[-1]}")["status"] == "success"


def test_https_profile_answers_over_tls_and_a_client_trusting_caddys_root_solves(
    stack: Compose, apod: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.profiles = ["https"]
    stack.env["NOVA_PROXY_HOPS"] = "1"  # as docker-compose.yml says for this profile
    stack.up()
    root = tmp_path / "nova-root.crt"
    copy = ("cp", "caddy:/data/caddy/pki/authorities/local/root.crt", str(root))
    assert wait_for(lambda: stack.run(*copy).returncode == 0, 60, interval=1), stack("logs")
    base = f"https://localhost:{stack.https_port}"
    # TLS for real: a client that trusts only the system's authorities refuses the server.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(base + "/healthz", timeout=10)
    assert wait_for(lambda: requests.get(base + "/healthz", verify=str(root), timeout=10).ok, 60)
    key = stack.create_user("tls@example.org")
    api = NovaAPI(base, verify=str(root))
    api.login(key)
    calibration = api.solve(apod / "apod4.jpg", **(HINTS | {"scale_lower": 24}))
    assert calibration["dec"] == pytest.approx(APOD4_DEC, abs=0.1)
    # A real client, told to trust Caddy's root the way requests-based clients are.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(root))
    astroquery_solves_apod4(base, key, apod)


def test_postgres_profile_solves_with_the_documented_url(stack: Compose, apod: Path) -> None:
    stack.profiles = ["postgres"]
    stack.env["NOVA_DATABASE_URL"] = POSTGRES_URL
    stack.env.pop("NOVA_PROXY_HOPS", None)
    stack.up()
    key = stack.create_user("pg@example.org")
    api = NovaAPI(stack.base)
    api.login(key)
    calibration = api.solve(apod / "apod4.jpg", **HINTS)
    assert calibration["dec"] == pytest.approx(APOD4_DEC, abs=0.1)

    def psql(query: str) -> str:
        return stack("exec", "-T", "postgres", "psql", "-U", "nova", "-d", "nova", "-tAc", query)

    # The job is in PostgreSQL (not a SQLite file), in a UTF8 database as the official image makes.
    assert psql("SHOW server_encoding").strip() == "UTF8"
    assert int(psql("SELECT count(*) FROM jobs WHERE status = 'success'")) >= 1
    assert psql("SELECT email FROM users").split() == ["pg@example.org"]


def test_slow_clients_do_not_starve_the_stack_and_https_sends_hsts(stack: Compose) -> None:
    """Issue 16 (M1, L10) behind compose: with 16 slowloris connections on the web port,
    /healthz and the API answer within 1 s; over the https profile, Caddy adds HSTS to
    Nova's own security headers."""
    from tests.system.test_slow_clients import ANSWER_WITHIN, SLOW_CONNECTIONS, slowest_answer

    stack.profiles = ["https"]
    stack.env["NOVA_PROXY_HOPS"] = "1"
    stack.env.pop("NOVA_DATABASE_URL", None)
    stack.up()
    for body in (False, True):
        slowest = slowest_answer(stack.base, body)
        record_figure(
            f"slowloris behind compose ({SLOW_CONNECTIONS} connections trickling their "
            f"{'body' if body else 'headers'}): slowest /healthz or API answer "
            f"{slowest * 1000:.0f} ms"
        )
        assert slowest < ANSWER_WITHIN, slowest
    root = Path(stack.work_dir) / "hsts-root.crt"
    copy = ("cp", "caddy:/data/caddy/pki/authorities/local/root.crt", str(root))
    assert wait_for(lambda: stack.run(*copy).returncode == 0, 60, interval=1), stack("logs")
    base = f"https://localhost:{stack.https_port}"

    def answered() -> bool:
        try:
            return requests.get(base + "/upload", verify=str(root), timeout=10).ok
        except requests.RequestException:
            return False

    assert wait_for(answered, 60)
    page = requests.get(base + "/upload", verify=str(root), timeout=10)
    assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in page.text and " onclick=" not in page.text
