"""Small client run *inside* a test network namespace by tests/system/test_two_hosts.py.

The test process lives in the root network namespace, which has no route to the namespaces'
private addresses; every probe and the API client therefore run as
``ip netns exec <ns> python tests/support/netns_helper.py <command> ...`` and print one JSON line.

Commands:
    wait-http URL TIMEOUT            until GET URL answers 200
    wait-redis URL TIMEOUT           until redis answers PING
    wait-worker REDIS_URL TIMEOUT    until an RQ worker is registered; prints the workers
    solve BASE KEY FILE TIMEOUT      API login, upload with a scale hint, poll until the job ends
    rq-job REDIS_URL RQ_ID           the RQ job's status, worker and the finished registries
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import redis
import requests

HINTS = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def http_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never a proxy from the environment: traffic stays in the netns
    return session


def wait_http(url: str, timeout: float) -> int:
    session = http_session()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = session.get(url, timeout=2)
            if response.status_code == 200:
                emit({"ok": True, "body": response.text[:500]})
                return 0
            last = f"HTTP {response.status_code}: {response.text[:500]}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.2)
    emit({"ok": False, "error": last})
    return 1


def wait_redis(url: str, timeout: float) -> int:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if client.ping():
                emit({"ok": True})
                return 0
        except redis.exceptions.RedisError as exc:
            last = repr(exc)
        time.sleep(0.1)
    emit({"ok": False, "error": last})
    return 1


def workers(connection: redis.Redis) -> list[dict[str, Any]]:
    from rq import Worker

    return [
        {
            "name": worker.name,
            "hostname": worker.hostname,
            "pid": worker.pid,
            "ip_address": worker.ip_address,
            "queues": worker.queue_names(),
            "successful_job_count": worker.successful_job_count,
        }
        for worker in Worker.all(connection=connection)
    ]


def wait_worker(url: str, timeout: float) -> int:
    connection = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = workers(connection)
        if found:
            break
        time.sleep(0.2)
    emit({"ok": bool(found), "workers": found})
    return 0 if found else 1


def solve(base: str, key: str, path: str, timeout: float) -> int:
    """Upload ``path`` through nova's JSON API and poll until its job ends."""
    session = http_session()
    started = time.monotonic()

    def call(endpoint: str, args: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        data = {"request-json": json.dumps(args)} if args is not None else None
        response = session.post(f"{base}/api/{endpoint}", data=data, timeout=30, **kwargs)
        response.raise_for_status()
        return dict(response.json())

    login = call("login", {"apikey": key})
    if login.get("status") != "success":
        emit({"ok": False, "error": f"login: {login}"})
        return 1
    with open(path, "rb") as handle:
        upload = call(
            "upload",
            {"session": login["session"], **HINTS},
            files={"file": (path.rsplit("/", 1)[-1], handle)},
        )
    if upload.get("status") != "success":
        emit({"ok": False, "error": f"upload: {upload}"})
        return 1
    subid = upload["subid"]
    deadline = started + timeout
    job_id = None
    status: dict[str, Any] = {}
    submission: dict[str, Any] = {}
    while time.monotonic() < deadline:
        submission = call(f"submissions/{subid}")
        jobs = [job for job in submission.get("jobs", []) if job is not None]
        if submission.get("error_message"):
            break
        if jobs:
            job_id = jobs[0]
            status = call(f"jobs/{job_id}")
            if status.get("status") in ("success", "failure"):
                break
        time.sleep(0.5)
    payload: dict[str, Any] = {
        "ok": status.get("status") == "success",
        "subid": subid,
        "job_id": job_id,
        "status": status.get("status"),
        "submission": submission,
        "elapsed": round(time.monotonic() - started, 2),
    }
    if job_id is not None:
        payload["calibration"] = call(f"jobs/{job_id}/calibration")
        payload["info"] = call(f"jobs/{job_id}/info")
    emit(payload)
    return 0


def rq_job(url: str, rq_id: str) -> int:
    from rq.job import Job
    from rq.registry import FinishedJobRegistry, StartedJobRegistry

    connection = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    job = Job.fetch(rq_id, connection=connection)
    result = job.latest_result()
    queues = (
        "default",
        "solve-quick",
        "solve",
    )  # where uploads and solves go (nova.infra.jobqueue)
    emit(
        {
            "status": job.get_status().value,
            "origin": job.origin,
            "worker_name": job.worker_name,
            "result_worker_name": getattr(result, "worker_name", None),
            "finished": {
                name: FinishedJobRegistry(name, connection=connection).get_job_ids()
                for name in queues
            },
            "started": {
                name: StartedJobRegistry(name, connection=connection).get_job_ids()
                for name in queues
            },
            "workers": workers(connection),
        }
    )
    return 0


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "wait-http":
        return wait_http(args[0], float(args[1]))
    if command == "wait-redis":
        return wait_redis(args[0], float(args[1]))
    if command == "wait-worker":
        return wait_worker(args[0], float(args[1]))
    if command == "solve":
        return solve(args[0], args[1], args[2], float(args[3]))
    if command == "rq-job":
        return rq_job(args[0], args[1])
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
