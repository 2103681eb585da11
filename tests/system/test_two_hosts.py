"""Scaling out: a worker on another host, with the same NOVA_* settings, takes the jobs.

Two network namespaces play two hosts joined by a private link (a veth pair on a random
10.251.x.y/30 that exists only inside them):

* host A runs PostgreSQL, redis and the web server (gunicorn), each listening on A's address
  only, and no worker at all;
* host B runs one ``nova worker`` whose NOVA_DATABASE_URL and NOVA_REDIS_URL name host A's
  address.

An image uploaded to host A's web server must be solved by the worker on host B.

The data directory: ``ip netns exec`` gives each command a private *network* namespace, and
its mount namespace is a copy of the root one, so both "hosts" see the same temporary
directory at the same path. That shared directory plays the role of the NFS mount that a real
second host would use for NOVA_DATA_DIR.

Needs root, iproute2 with network-namespace support, PostgreSQL, redis and the engine; any of
them missing fails the test (never skips it). No packet leaves the two namespaces.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nova.infra import jobqueue
from nova.infra.storage import Storage
from tests.support.paths import REPO
from tests.support.processes import init_postgres_cluster, postgres_bindir, redis_binary

pytestmark = pytest.mark.engine

HELPER = REPO / "tests" / "support" / "netns_helper.py"
PG_PORT, REDIS_PORT, WEB_PORT = 5432, 6379, 8000  # fresh namespaces: nothing else listens
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError as exc:
        return f"<{path}: {exc}>"


@dataclass
class Hosts:
    """Two network namespaces joined by a veth pair, and the processes started in them."""

    a: str
    b: str
    a_ip: str
    b_ip: str
    subnet: str
    logs: Path
    pg_dir: Path  # PostgreSQL's directory, outside pytest's 0700 root (see the fixture)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, ns: str, command: list[str], env: dict[str, str], timeout: float = 60) -> str:
        """Run ``command`` in namespace ``ns`` to completion; return stdout; fail with output."""
        result = subprocess.run(
            ["ip", "netns", "exec", ns, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.logs,
        )
        assert result.returncode == 0, (
            f"{' '.join(command)} in {ns} exited {result.returncode}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}\n{self.all_logs()}"
        )
        return result.stdout

    def helper(self, ns: str, env: dict[str, str], *args: str, timeout: float = 60) -> dict:
        """Run tests/support/netns_helper.py inside ``ns``; return its JSON answer."""
        out = self.run(ns, [sys.executable, str(HELPER), *args], env, timeout=timeout)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def start(
        self, name: str, ns: str, command: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> Path:
        """Start a long-running process in ``ns`` in its own process group; log to a file."""
        log = self.logs / f"{name}.log"
        with log.open("wb") as sink:
            # `ip netns exec` enters the namespace and execs the command: same pid.
            self.processes[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns, *command],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd or self.logs,
            )
        return log

    def alive(self, name: str) -> None:
        process = self.processes[name]
        assert process.poll() is None, f"{name} exited with {process.returncode}\n{self.all_logs()}"

    def all_logs(self) -> str:
        return "\n".join(
            f"--- {log.name} (last lines) ---\n{tail(log, 2000)}"
            for log in sorted(self.logs.glob("*.log"))
        )


def stop_group(process: subprocess.Popen[bytes], sig: int, grace: float = 10) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers left in the group
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=60)


def kill_namespace_pids(ns: str) -> None:
    """Kill whatever is still inside one of our namespaces (e.g. an engine in its own group)."""
    listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in listed.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    assert os.geteuid() == 0, "test_two_hosts needs root (network namespaces)"
    ip = shutil.which("ip")
    assert ip, "iproute2 (`ip`) is not installed: apt-get install iproute2"
    tag = secrets.token_hex(3)
    ns_a, ns_b = f"nova-a-{tag}", f"nova-b-{tag}"
    veth_a, veth_b = f"nva-{tag}", f"nvb-{tag}"  # interface names: at most 15 characters
    third, base = secrets.randbelow(256), 4 * secrets.randbelow(64)
    a_ip, b_ip = f"10.251.{third}.{base + 1}", f"10.251.{third}.{base + 2}"
    logs = tmp_path / "logs"
    logs.mkdir()
    # Not under pytest's 0700 temporary root: the postgres user must be able to enter it.
    pg_dir = Path(tempfile.mkdtemp(prefix="nova-two-hosts-pg-"))
    shutil.chown(pg_dir, "postgres", "postgres")
    hosts = Hosts(ns_a, ns_b, a_ip, b_ip, f"10.251.{third}.{base}/30", logs, pg_dir)

    def ip_cmd(*args: str) -> None:
        result = subprocess.run([ip, *args], capture_output=True, text=True)
        assert result.returncode == 0, (
            f"`ip {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()} "
            "-- network namespaces are required (root, iproute2, a kernel with netns)"
        )

    created: list[str] = []
    veth_created = False
    try:
        for ns in (ns_a, ns_b):
            ip_cmd("netns", "add", ns)
            created.append(ns)
        ip_cmd("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        veth_created = True
        ip_cmd("link", "set", veth_a, "netns", ns_a)
        ip_cmd("link", "set", veth_b, "netns", ns_b)
        for ns, veth, address in ((ns_a, veth_a, a_ip), (ns_b, veth_b, b_ip)):
            ip_cmd("-n", ns, "link", "set", "lo", "up")
            ip_cmd("-n", ns, "addr", "add", f"{address}/30", "dev", veth)
            ip_cmd("-n", ns, "link", "set", veth, "up")
        yield hosts
    finally:
        # Clients first, then the servers they talk to; PostgreSQL gets a fast shutdown.
        order = ("worker", "web", "redis", "postgres")
        for name in sorted(hosts.processes, key=lambda n: order.index(n) if n in order else -1):
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            stop_group(hosts.processes[name], sig)
        for ns in created:
            kill_namespace_pids(ns)
            subprocess.run([ip, "netns", "del", ns], capture_output=True)
        if veth_created:
            # An end left in the root namespace (set-up failed half-way); deleting one end
            # deletes its peer. Deleting a namespace deletes the end inside it.
            for veth in (veth_a, veth_b):
                subprocess.run([ip, "link", "del", veth], capture_output=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


def test_a_worker_on_another_host_takes_the_jobs(hosts: Hosts, tmp_path: Path, apod: Path) -> None:
    started = time.monotonic()
    bindir = postgres_bindir()
    redis_server = redis_binary()
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is missing"

    # The shared data directory (the NFS mount of a real deployment, see the module docstring).
    shared = tmp_path / "shared-data"
    database_url = f"postgresql+psycopg://postgres@{hosts.a_ip}:{PG_PORT}/nova"
    redis_url = f"redis://{hosts.a_ip}:{REDIS_PORT}/0"
    base_url = f"http://{hosts.a_ip}:{WEB_PORT}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NOVA_") and k.lower() not in PROXY_VARIABLES
    }
    env.update(
        NOVA_ENV="development",
        NOVA_SECRET_KEY="two-hosts-test-secret",
        NOVA_DATABASE_URL=database_url,
        NOVA_REDIS_URL=redis_url,
        NOVA_DATA_DIR=str(shared),
        NOVA_SOLVE_TIME_LIMIT="120",
    )

    # --- host A: PostgreSQL on A's address, trusting only the test subnet -------------------
    pg_data = hosts.pg_dir / "data"
    init_postgres_cluster(bindir, pg_data)
    with (pg_data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {hosts.subnet} trust\n")
    hosts.start(
        "postgres",
        hosts.a,
        [
            setpriv,
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
            str(bindir / "postgres"),
            "-D",
            str(pg_data),
            "-p",
            str(PG_PORT),
            "-k",
            str(hosts.pg_dir),
            "-c",
            f"listen_addresses={hosts.a_ip}",
            "-c",
            "fsync=off",
        ],
        env,
        cwd=hosts.pg_dir,
    )
    # --- host A: redis on A's address, no persistence ----------------------------------------
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    hosts.start(
        "redis",
        hosts.a,
        [
            redis_server,
            "--bind",
            hosts.a_ip,
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(redis_dir),
            "--protected-mode",
            "no",
        ],
        env,
    )

    pg_ready = [
        "ip",
        "netns",
        "exec",
        hosts.a,
        str(bindir / "pg_isready"),
        "-h",
        hosts.a_ip,
        "-p",
        str(PG_PORT),
        "-U",
        "postgres",
        "-t",
        "1",
    ]
    deadline = time.monotonic() + 30
    while subprocess.run(pg_ready, capture_output=True).returncode:
        hosts.alive("postgres")
        assert time.monotonic() < deadline, f"PostgreSQL did not start\n{hosts.all_logs()}"
        time.sleep(0.2)
    hosts.run(
        hosts.a,
        [str(bindir / "createdb"), "-h", hosts.a_ip, "-p", str(PG_PORT), "-U", "postgres", "nova"],
        env,
    )
    ready = hosts.helper(hosts.a, env, "wait-redis", redis_url, "15")
    assert ready["ok"], f"redis did not start: {ready}\n{hosts.all_logs()}"

    # --- host A: the database tables, a user, the web server --------------------------------
    nova = [sys.executable, "-m", "nova"]
    hosts.run(hosts.a, [*nova, "init-db"], env)
    created = hosts.run(hosts.a, [*nova, "create-user", "observer@example.org"], env)
    match = re.search(r"API key: ([A-Za-z0-9]+)", created)
    assert match, created
    api_key = match.group(1)
    hosts.start(
        "web",
        hosts.a,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{hosts.a_ip}:{WEB_PORT}",
            "--workers",
            "2",
            "--timeout",
            "120",
            "--access-logfile",
            "-",
            "--no-control-socket",
            "nova.wsgi:app",
        ],
        env,
    )
    health = hosts.helper(hosts.a, env, "wait-http", f"{base_url}/healthz", "30")
    assert health["ok"], f"web server not healthy: {health}\n{hosts.all_logs()}"

    # --- host B: one worker, same settings, pointing at host A -------------------------------
    worker_log = hosts.start("worker", hosts.b, [*nova, "worker"], env)
    registered = hosts.helper(hosts.a, env, "wait-worker", redis_url, "30")
    assert registered["ok"], f"no worker registered: {registered}\n{hosts.all_logs()}"
    [worker] = registered["workers"]  # exactly one worker exists, and it is host B's
    assert worker["pid"] == hosts.processes["worker"].pid, (worker, hosts.processes["worker"].pid)
    # redis saw the worker's connection coming from host B's address.
    assert worker["ip_address"].split(":")[0] == hosts.b_ip, worker

    # --- a client on host A uploads through the JSON API and waits -------------------------
    ready_at = time.monotonic()
    solved = hosts.helper(
        hosts.a, env, "solve", base_url, api_key, str(apod / "apod4.jpg"), "120", timeout=150
    )
    solve_seconds = time.monotonic() - ready_at
    hosts.alive("worker")
    hosts.alive("web")
    job_id = solved["job_id"]
    assert solved["ok"], f"the upload was not solved: {json.dumps(solved)}\n{hosts.all_logs()}"
    calibration = solved["calibration"]
    assert abs(calibration["dec"] - 56.71) < 0.05, calibration
    assert solved["info"]["original_filename"] == "apod4.jpg", solved["info"]

    # --- the job was done by host B's worker ----------------------------------------------
    rq_job = hosts.helper(hosts.a, env, "rq-job", redis_url, f"solve-{job_id}")
    assert rq_job["status"] == "finished", rq_job
    assert rq_job["origin"] == jobqueue.QUICK_SOLVE_QUEUE, rq_job  # hinted: the quick queue
    assert rq_job["worker_name"] == worker["name"], (rq_job, worker)
    assert rq_job["result_worker_name"] in (None, worker["name"]), rq_job
    assert f"solve-{job_id}" in rq_job["finished"][jobqueue.QUICK_SOLVE_QUEUE], rq_job
    [after] = rq_job["workers"]
    assert after["name"] == worker["name"] and after["successful_job_count"] >= 2, after
    deadline = time.monotonic() + 5  # the worker logs "Job OK" just after finishing
    while f"solve-{job_id}" not in tail(worker_log, 100_000) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"solve-{job_id}" in tail(worker_log, 100_000), hosts.all_logs()
    assert f"solve-{job_id}" not in tail(hosts.logs / "web.log", 100_000)

    # --- its products are in the shared data directory -------------------------------------
    job_dir = Storage(shared).job_dir(job_id)
    assert [p for p in (shared / "jobs").glob("*/*") if p.is_dir()] == [job_dir]
    for product in ("wcs.fits", "corr.fits", "rdls.fits", "log"):
        assert (job_dir / product).is_file(), sorted(os.listdir(job_dir))

    print(
        f"\ntwo hosts: job {job_id} solved by the worker in namespace {hosts.b} "
        f"({hosts.b_ip}, pid {worker['pid']}, rq worker {worker['name']}) for the web server "
        f"in {hosts.a} ({hosts.a_ip}) in {solve_seconds:.1f} s "
        f"(dec {calibration['dec']:.3f}; whole test {time.monotonic() - started:.1f} s)"
    )
