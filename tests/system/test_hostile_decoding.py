"""Hostile uploads against a whole stack (issue 16: H1, H2, L4, L7): compression bombs,
tile-compressed (fpack) bombs, cubes, star lists and headers of millions of lines. The web
process only sniffs them and stays small; the worker decodes them in a sandboxed child and
refuses them with a reason; every job ends within its time limit (+5 s)."""

from __future__ import annotations

import bz2
import gzip
import io
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits

from tests.support.corpus import fits_header
from tests.support.figures import record_figure
from tests.support.processes import wait_for
from tests.support.stack import LiveStack, live_stack
from tests.system.test_hostile import HINT, NO_RATE_LIMITS, Client

pytestmark = pytest.mark.engine

MB = 1 << 20
SOLVE_TIME_LIMIT = 20
WEB_RSS_LIMIT = 300 * MB


def fpack_bomb(side: int) -> bytes:
    """side x side zeros, tile-compressed: a few hundred kB that unpack to side^2 x 2 bytes."""
    hdu = fits.CompImageHDU(
        np.zeros((side, side), dtype=np.int16),
        compression_type="GZIP_1",
        tile_shape=(1000, side),
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def header_of_cards(cards: int) -> bytes:
    """A FITS header of ``cards`` HISTORY cards and an 8x8 image."""
    start = fits_header(
        [("SIMPLE", "T"), ("BITPIX", "8"), ("NAXIS", "2"), ("NAXIS1", "8"), ("NAXIS2", "8")],
        end=False,
    )
    body = start + b"HISTORY x".ljust(80) * cards + b"END".ljust(80)
    body += b" " * (-len(body) % 2880)
    return body + b"\0" * 2880


def bombs() -> dict[str, bytes]:
    zeros_fits = fits_header(
        [("SIMPLE", "T"), ("BITPIX", "8"), ("NAXIS", "2"), ("NAXIS1", "16000"), ("NAXIS2", "12000")]
    )
    return {
        # The figures: 118 KB -> 14000x14000; 51 KB -> 13M star lines; 625 KB ->
        # 2.3M header cards; 256 bytes -> a 192 MB FITS.
        "fpack-14000": fpack_bomb(14000),
        "gzip-13M-star-lines": gzip.compress(b"1 1\n" * 13_000_000, 9),
        "gzip-2.3M-header-cards": gzip.compress(header_of_cards(2_300_000), 9),
        "bzip2-192MB-fits": bz2.compress(zeros_fits + b"\0" * (16000 * 12000), 9),
        "cube-5000x5000x99": fits_header(
            [
                ("SIMPLE", "T"),
                ("BITPIX", "16"),
                ("NAXIS", "3"),
                ("NAXIS1", "5000"),
                ("NAXIS2", "5000"),
                ("NAXIS3", "99"),
            ]
        ),  # fmt: skip
    }


def web_processes(stack: LiveStack) -> list[int]:
    """gunicorn's master and workers (not the sandboxed children they fork)."""
    children = Path(f"/proc/{stack.process.pid}/task/{stack.process.pid}/children")
    found = []
    for pid in children.read_text().split():
        if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
            found.append(int(pid))
            workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            found += [int(worker) for worker in workers]
    return found


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


class RssSampler(threading.Thread):
    """The largest resident size any web process reached while it ran."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.peak = max([self.peak, *(rss(pid) for pid in self.pids)])


def seconds_between(start: str | None, end: str | None) -> float:
    assert start and end
    parse = lambda text: datetime.fromisoformat(text.rstrip("Z"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def test_hostile_uploads_keep_the_web_process_small_and_jobs_in_their_limit(
    tmp_path: Path, apod: Path
) -> None:
    inputs = bombs()
    with live_stack(
        tmp_path, NOVA_SOLVE_TIME_LIMIT=str(SOLVE_TIME_LIMIT), **NO_RATE_LIMITS
    ) as stack:
        client = Client(stack)
        pids = web_processes(stack)
        assert len(pids) >= 2, pids
        sampler = RssSampler(pids)
        sampler.start()
        submissions: dict[int, str] = {}
        started = time.monotonic()
        for name, data in inputs.items():
            form = client.form_post({}, {"file": data})
            assert form.status_code in (303, 400), (name, form.status_code)
            if form.status_code == 303:
                submissions[int(form.headers["Location"].rsplit("/", 1)[1])] = f"form {name}"
            api = client.api_post("upload", client.args(**HINT), file=data).json()
            assert api["status"] == "success", (name, api)
            submissions[int(api["subid"])] = f"api {name}"
        upload_seconds = time.monotonic() - started
        # A real photo among them, and its pictures (drawn in the web's sandboxed child).
        photo = client.api_post(
            "upload", client.args(**HINT), file=(apod / "apod4.jpg").read_bytes()
        ).json()["subid"]
        submissions[int(photo)] = "apod4"

        states: dict[int, dict] = {}  # type: ignore[type-arg]

        def all_ended() -> bool:
            for submission_id in submissions:
                if submission_id not in states:
                    state = client.state(submission_id)
                    if state["finished"]:
                        states[submission_id] = state
            return len(states) == len(submissions)

        assert wait_for(all_ended, 600, 1.0), stack.log_path.read_text()[-3000:]
        image = states[int(photo)]["images"][0]
        for route in ("display_image", "thumbnail_of_image", "image"):
            picture = requests.get(f"{stack.base}/{route}/{image['id']}", timeout=60)
            assert picture.status_code == 200, (route, picture.status_code)
        sampler.stop.set()
        sampler.join()

        durations = []
        for submission_id, state in states.items():
            name = submissions[submission_id]
            jobs = [entry["job"] for entry in state["images"] if entry["job"]]
            assert jobs, (name, state)
            for job in jobs:
                if name == "apod4":
                    assert job["status"] == "success", job
                else:
                    assert job["status"] == "failure" and job["failure_reason"], (name, job)
                    assert "Internal error" not in job["failure_reason"], (name, job)
                if job["started_at"]:
                    durations.append(seconds_between(job["started_at"], job["finished_at"]))
        reasons = sorted(
            {
                (state["error_message"] or "")[:70]
                for sid, state in states.items()
                if submissions[sid] != "apod4"
            }
        )
        record_figure(
            f"hostile decoding: {len(inputs)} bombs x (form, API) uploaded in "
            f"{upload_seconds:.1f} s; web processes' peak RSS {sampler.peak / MB:.0f} MB "
            f"(limit {WEB_RSS_LIMIT // MB} MB); longest job {max(durations):.1f} s of "
            f"{SOLVE_TIME_LIMIT} s; refusals: {reasons}"
        )
        assert sampler.peak < WEB_RSS_LIMIT
        assert max(durations) <= SOLVE_TIME_LIMIT + 5, durations
