"""Where RQ found Nova's job functions before release 0.2: queue entries enqueued by an older
release name ``nova.tasks.*`` and must still run after an upgrade. Kept for one release."""

from nova.worker.tasks import process_submission_job, solve_job

__all__ = ["process_submission_job", "solve_job"]
