"""nova's JSON API as a polling client uses it, with the timings the bench records."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nova_bench.bare import scale_bounds
from nova_bench.common import CLOCK, JOB_TIMEOUT, POLL_INTERVAL
from tests.support.api import HttpApiClient


class NovaClient(HttpApiClient):
    """nova's JSON API as a polling client does it (client.py, astroquery), timed."""

    def wait_for_job(self, subid: int, deadline: float) -> int | None:
        while time.perf_counter() < deadline:
            job_id, failed = self.job_of(subid)
            if job_id is not None or failed:
                return job_id
            time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"submission {subid} got no job in time")

    def wait_until(self, job_id: int, statuses: tuple[str, ...], deadline: float) -> str:
        while time.perf_counter() < deadline:
            status = self.status(job_id)
            if status in statuses:
                return status
            time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"job {job_id} did not reach {statuses} in time")

    def timed_solve(
        self,
        path: Path,
        options: dict[str, Any],
        during_solve: Callable[[int], Any] | None = None,
    ) -> dict[str, Any]:
        """Upload, poll to the end, fetch the calibration; time from upload start to it."""
        record: dict[str, Any] = {"options": options}
        start = time.perf_counter()
        deadline = start + JOB_TIMEOUT
        subid, file_hash = self.upload(path, options)
        uploaded = time.perf_counter()
        job_id = self.wait_for_job(subid, deadline)
        record.update(subid=subid, hash=file_hash, job=job_id)
        status, calibration = "failure", None
        if job_id is not None:
            if during_solve is not None:
                self.wait_until(job_id, ("solving", "success", "failure"), deadline)
                record["during_solve"] = during_solve(job_id)
            status = self.wait_until(job_id, ("success", "failure"), deadline)
        seen = time.perf_counter()
        if status == "success" and job_id is not None:
            calibration = self.calibration(job_id)
        done = time.perf_counter()
        record.update(
            status=status,
            calibration=calibration,
            wall=done - start,
            client={
                "start": CLOCK.epoch(start),
                "uploaded": CLOCK.epoch(uploaded),
                "seen": CLOCK.epoch(seen),
                "done": CLOCK.epoch(done),
            },
        )
        return record


def nova_options(photo: str, hinted: bool) -> dict[str, Any]:
    """API arguments: nothing at all for nova's defaults, or a degwidth scale hint."""
    if not hinted:
        return {}
    low, high = scale_bounds(photo, True)
    return {
        "scale_units": "degwidth",
        "scale_type": "ul",
        "scale_lower": low,
        "scale_upper": high,
    }
