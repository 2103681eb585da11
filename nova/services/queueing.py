"""Which queue a solve goes on, decided from its row; the queue itself is nova.infra.jobqueue."""

from __future__ import annotations

from nova.db.models import Job
from nova.engine.params import SolveParams
from nova.extensions import db
from nova.infra import jobqueue

# A hint makes a solve quick only when it narrows the search: a scale range at most this
# wide (high / low; a careful +-20 % hint is 1.5) or a position within this radius. Wider
# "hints" (0-180 degrees, a whole-sky radius) are blind solves and wait with them.
QUICK_SCALE_SPREAD = 4.0
QUICK_RADIUS_DEGREES = 30.0


def is_quick(params: SolveParams, kind: str) -> bool:
    """A solve that a hint or a star list makes quick: it goes to QUICK_SOLVE_QUEUE."""
    if kind == "xylist":
        return True
    if params.has_position_hint and (params.radius or 180.0) <= QUICK_RADIUS_DEGREES:
        return True
    bounds = params.scale_bounds()
    if bounds is None:
        return False
    low, high = bounds
    return low > 0 and high / low <= QUICK_SCALE_SPREAD


def _is_quick_job(job: Job | None) -> bool:
    if job is None or job.user_image is None:
        return False
    image = job.user_image
    return is_quick(SolveParams.from_row(image.submission), image.kind)


def solve_queue_for(job_id: int) -> str:
    """The queue a job's solve belongs on, from its parameters and input kind."""
    quick = _is_quick_job(db.session.get(Job, job_id))
    return jobqueue.QUICK_SOLVE_QUEUE if quick else jobqueue.SOLVE_QUEUE


def enqueue_solve(job_id: int) -> bool:
    """Queue a job's next solve attempt (its entry id follows its claims so far)."""
    job = db.session.get(Job, job_id)
    attempts = job.attempts if job is not None else 0
    return jobqueue.enqueue_solve(job_id, quick=_is_quick_job(job), attempts=attempts)


def solve_waiting_or_running(job_id: int) -> bool:
    """True when the entry of the job's next attempt is waiting or running."""
    job = db.session.get(Job, job_id)
    attempts = job.attempts if job is not None else 0
    return jobqueue.is_waiting_or_running(jobqueue.solve_entry_id(job_id, attempts))
