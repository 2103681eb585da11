"""Load: 50 concurrent uploads and 1,000 concurrent status polls, sent by wrk (a real load
tool) to a ``nova up`` stack (gunicorn and real workers). Every request must succeed and
every job must end.

The uploads are star lists taken from a first real solve of apod4 (with a scale hint), so
that 50 solves end in about a minute on a small machine.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits

from tests.support.figures import record_figure
from tests.support.processes import wait_for
from tests.support.stack import LiveStack, live_stack

pytestmark = pytest.mark.engine

UPLOADS = 50
POLL_CONNECTIONS = 1000
POLL_SECONDS = 10
HINT = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}
# This test measures throughput and errors under load, not the abuse limits.
NO_RATE_LIMITS = {
    "NOVA_UPLOAD_RATE_LIMIT": "1000000/minute",
    "NOVA_LOGIN_RATE_LIMIT": "1000000/minute",
}

# Each wrk thread owns one connection, sends one multipart upload (its own star list: the
# thread number is in a comment line) and stops; done() reports what the API answered.
UPLOAD_SCRIPT = r"""
local threads = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("number", counter)
  table.insert(threads, thread)
end
function init(args)
  local stars = io.open(args[1]):read("*a") .. "# upload " .. number .. "\n"
  local boundary = "nova-load-test-boundary"
  local body = "--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="request-json"\r\n\r\n' .. args[2] .. "\r\n"
    .. "--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="file"; filename="stars.txt"\r\n'
    .. "Content-Type: text/plain\r\n\r\n" .. stars .. "\r\n"
    .. "--" .. boundary .. "--\r\n"
  req = wrk.format("POST", "/api/upload",
    {["Content-Type"] = "multipart/form-data; boundary=" .. boundary}, body)
  accepted, refused, subids = 0, 0, ""
end
function request() return req end
function response(status, headers, body)
  local subid = body:match('"subid": (%d+)')
  if status == 200 and subid then
    accepted = accepted + 1
    subids = subids .. subid .. ","
  else
    refused = refused + 1
    io.stderr:write("REFUSED " .. status .. " " .. body:sub(1, 300) .. "\n")
  end
  wrk.thread:stop()
end
function done(summary, latency, requests)
  local accepted_all, refused_all, ids = 0, 0, ""
  for _, thread in ipairs(threads) do
    accepted_all = accepted_all + thread:get("accepted")
    refused_all = refused_all + thread:get("refused")
    ids = ids .. thread:get("subids")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "accepted": %d, "refused": %d, "socket_errors": %d, '
    .. '"status_errors": %d, "subids": [%s]}\n',
    summary.requests, accepted_all, refused_all, e.connect + e.read + e.write + e.timeout,
    e.status, ids:sub(1, -2)))
end
"""

# Round-robin GETs over the given paths; an answer that is not 200, or nova's error
# envelope, counts as an error.
POLL_SCRIPT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  paths = {}
  for line in io.lines(args[1]) do table.insert(paths, line) end
  index, failed = 0, 0
end
function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end
function response(status, headers, body)
  if status ~= 200 or body:find('"status": "error"', 1, true) then failed = failed + 1 end
end
function done(summary, latency, requests)
  local failed_all = 0
  for _, thread in ipairs(threads) do failed_all = failed_all + thread:get("failed") end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "failed": %d, "socket_errors": %d, "status_errors": %d, '
    .. '"p99_ms": %.1f}\n',
    summary.requests, failed_all, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(99) / 1000))
end
"""


def run_wrk(
    stack: LiveStack, tmp_path: Path, script: str, options: list[str], script_args: list[str]
) -> subprocess.Popen[str]:
    binary = shutil.which("wrk")
    assert binary, "wrk is not installed (scripts/install-system.sh --test installs it)"
    path = tmp_path / f"script-{len(list(tmp_path.glob('script-*')))}.lua"
    path.write_text(script)
    return subprocess.Popen(
        [binary, *options, "--timeout", "60s", "-s", str(path), stack.base, "--", *script_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def result(process: subprocess.Popen[str]) -> dict:  # type: ignore[type-arg]
    output, _ = process.communicate(timeout=180)
    match = re.search(r"^RESULT (.*)$", output, re.MULTILINE)
    assert match, output
    answer = json.loads(match.group(1))
    answer["refusals"] = re.findall(r"^REFUSED (.*)$", output, re.MULTILINE)
    return answer


def test_concurrent_uploads_and_status_polls_from_wrk(tmp_path: Path, apod: Path) -> None:
    with live_stack(tmp_path, NOVA_WORKERS="2", NOVA_WEB_WORKERS="4", **NO_RATE_LIMITS) as stack:
        api = requests.Session()
        key = re.search(r"API key: (\w+)", stack.nova("create-user", "load@example.org"))
        assert key
        session_key = api.post(
            f"{stack.base}/api/login",
            data={"request-json": json.dumps({"apikey": key.group(1)})},
            timeout=30,
        ).json()["session"]

        def status_of(submission_id: int) -> str | None:
            answer = api.get(f"{stack.base}/api/submissions/{submission_id}", timeout=30).json()
            if not answer["jobs"] or answer["jobs"][0] is None:
                return None
            job = api.get(f"{stack.base}/api/jobs/{answer['jobs'][0]}", timeout=30).json()
            return str(job["status"])

        # A first solve of the photo gives the star list (its 150 brightest sources).
        arguments = json.dumps({"session": session_key, **HINT})
        with (apod / "apod4.jpg").open("rb") as photo:
            first = api.post(
                f"{stack.base}/api/upload",
                data={"request-json": arguments},
                files={"file": ("apod4.jpg", photo)},
                timeout=60,
            ).json()["subid"]
        assert wait_for(lambda: status_of(first) == "success", 120, 0.5), status_of(first)
        first_job = api.get(f"{stack.base}/api/submissions/{first}", timeout=30).json()["jobs"][0]
        with fits.open(io.BytesIO(api.get(f"{stack.base}/axy_file/{first_job}").content)) as hdus:
            table = hdus[1]
            x, y = np.asarray(table.data["X"])[:150], np.asarray(table.data["Y"])[:150]
            width, height = table.header["IMAGEW"], table.header["IMAGEH"]
        stars = tmp_path / "stars.txt"
        stars.write_text("".join(f"{a:.3f} {b:.3f}\n" for a, b in zip(x, y, strict=True)))
        upload_arguments = json.dumps(
            {"session": session_key, "image_width": width, "image_height": height, **HINT}
        )

        # The uploads, while 1,000 connections poll the first submission and job.
        paths = tmp_path / "first-paths.txt"
        paths.write_text(f"/api/submissions/{first}\n/api/jobs/{first_job}\n")
        polls_during_uploads = run_wrk(
            stack,
            tmp_path,
            POLL_SCRIPT,
            ["-t2", f"-c{POLL_CONNECTIONS}", f"-d{POLL_SECONDS}s"],
            [str(paths)],
        )
        uploads = run_wrk(
            stack,
            tmp_path,
            UPLOAD_SCRIPT,
            [f"-t{UPLOADS}", f"-c{UPLOADS}", "-d60s"],
            [str(stars), upload_arguments],
        )
        upload_result = result(uploads)
        first_polls = result(polls_during_uploads)
        submissions = upload_result["subids"]
        assert len(submissions) == UPLOADS, upload_result["refusals"]

        # Then 1,000 connections poll the new submissions and their jobs while they solve.
        assert wait_for(lambda: all(status_of(s) is not None for s in submissions), 60, 0.5)
        jobs = [api.get(f"{stack.base}/api/submissions/{s}").json()["jobs"][0] for s in submissions]
        paths = tmp_path / "paths.txt"
        paths.write_text(
            "".join(
                f"/api/submissions/{s}\n/api/jobs/{j}\n"
                for s, j in zip(submissions, jobs, strict=True)
            )
        )
        polls = result(
            run_wrk(
                stack,
                tmp_path,
                POLL_SCRIPT,
                ["-t2", f"-c{POLL_CONNECTIONS}", f"-d{POLL_SECONDS}s"],
                [str(paths)],
            )
        )

        def ended() -> bool:
            return all(status_of(s) in ("success", "failure") for s in submissions)

        all_ended = wait_for(ended, 240, 1.0)
        outcomes = [status_of(s) for s in submissions]
        requests_sent = upload_result["requests"] + first_polls["requests"] + polls["requests"]
        errors = (
            upload_result["refused"]
            + upload_result["socket_errors"]
            + upload_result["status_errors"]
            + sum(
                p["failed"] + p["socket_errors"] + p["status_errors"] for p in (first_polls, polls)
            )
        )
        record_figure(
            f"load (wrk): {UPLOADS} concurrent uploads + {POLL_CONNECTIONS} concurrent pollers "
            f"-> {requests_sent} requests, {errors} errors, "
            f"{sum(o in ('success', 'failure') for o in outcomes)}/{UPLOADS} jobs ended "
            f"({outcomes.count('success')} solved); poll p99 "
            f"{max(first_polls['p99_ms'], polls['p99_ms']):.0f} ms"
        )
        assert errors == 0, (upload_result, first_polls, polls)
        assert all_ended, outcomes
        failures = [
            line for line in stack.log_path.read_text().splitlines() if "fail" in line.lower()
        ]
        assert outcomes.count("success") == UPLOADS, (outcomes, failures[-20:])
