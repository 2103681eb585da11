"""Which job or submission the RQ job running in this work horse is about, from its RQ id.

nova.logs asks on every record; it lives here because only the queue's side of the house
imports RQ (setup.cfg, rq-in-one-place).
"""

from __future__ import annotations

import re

from rq import get_current_job

# The ids nova gives its RQ jobs: "solve-<job id>..." and "submission-<submission id>...".
RQ_ID = re.compile(r"^(?P<kind>solve|submission)-(?P<id>\d+)")


def ids_of_current_job() -> dict[str, int]:
    """``{"job_id": N}`` or ``{"submission_id": N}`` inside a work horse's job, else ``{}``."""
    try:
        job = get_current_job()
    except Exception:  # not in a work horse, or RQ's state is unavailable
        return {}
    if job is None:
        return {}
    match = RQ_ID.match(job.id)
    if match is None:
        return {}
    field = "job_id" if match["kind"] == "solve" else "submission_id"
    return {field: int(match["id"])}
