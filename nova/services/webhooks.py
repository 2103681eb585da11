"""Webhooks: when a job of a submission with a ``callback_url`` ends, POST its outcome there.

The body is JSON (``payload``); ``X-Nova-Signature: sha256=<hex>`` is the HMAC-SHA256 of
the body's bytes keyed by the uploader's webhook secret (shown with their API key) or, for
an anonymous upload, the submission's own secret (told in the upload's answer). Deliveries
are RQ jobs on their own queue, retried by RQ after NOVA_WEBHOOK_RETRY_INTERVALS while the
receiver answers anything but 2xx; every try is a WebhookDelivery row. Addresses follow the
download rules (nova.infra.download; private ones only with NOVA_URL_ALLOW_PRIVATE), checked when
the upload names the URL and again, pinned, at every try.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from typing import Any

from flask import current_app, url_for
from sqlalchemy import func, select

from nova.db.models import Job, Submission, User, WebhookDelivery
from nova.engine.calibration import nova_calibration
from nova.extensions import db, settings
from nova.infra import download, download_targets, jobqueue, metrics

log = logging.getLogger(__name__)

EVENT_FINISHED = "job.finished"
SIGNATURE_HEADER = "X-Nova-Signature"


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx (or could not be reached): RQ tries again later."""


def new_secret() -> str:
    return secrets.token_hex(32)


def user_secret(user: User) -> str:
    """The account's webhook secret, made on first use (accounts older than webhooks)."""
    if user.webhook_secret is None:
        user.webhook_secret = new_secret()
        db.session.commit()
    return user.webhook_secret


def check_callback_url(url: str) -> str:
    """The URL, stripped, if webhooks may be sent there; ValueError with the reason if not."""
    url = url.strip()
    if len(url) > 2048:
        raise ValueError("The callback_url is longer than 2048 characters.")
    try:
        target = download_targets.parse_url(url)
        download_targets.resolve(
            target.host, target.port, allow_private=settings().url_allow_private
        )
    except download_targets.DownloadError as exc:
        raise ValueError(f"The callback_url cannot be used: {exc}.") from None
    return url


def signature(secret: str, body: bytes) -> str:
    """The X-Nova-Signature value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _result_url(job: Job) -> str:
    # Workers have no request to take the site's address from: NOVA_PUBLIC_URL says it.
    with current_app.test_request_context(base_url=settings().public_url):
        return url_for("web.user_image", image_id=job.user_image_id, _external=True)


def payload(job: Job) -> dict[str, Any]:
    calibration = job.calibration
    return {
        "event": EVENT_FINISHED,
        "job": job.id,
        "subid": job.user_image.submission_id,
        "status": str(job.status),
        "calibration": nova_calibration(calibration, with_size=False) if calibration else None,
        "failure_reason": job.failure_reason,
        "url": _result_url(job),
    }


def _signing_secret(submission: Submission) -> str | None:
    if submission.user is not None:
        return user_secret(submission.user)
    return submission.callback_secret


def job_ended(job_id: int) -> None:
    """Queue the delivery of a job's end, when its submission asked for one (called after
    the commit that ended it)."""
    job = db.session.get(Job, job_id)
    if job is None or not job.is_finished or not job.user_image.submission.callback_url:
        return
    intervals = list(settings().webhook_retry_intervals)
    # False (logged by jobqueue) when redis is away: the webhook of that end is lost.
    jobqueue.enqueue_delivery(
        job_id,
        "nova.worker.tasks.deliver_webhook",
        timeout=settings().webhook_timeout + 30,
        retry_intervals=intervals,
    )


def deliver_job(job_id: int) -> None:
    """One try (an RQ job, run by ``nova.worker.tasks.deliver_webhook`` in the worker's app
    context): POST the job's end, record the try, raise unless it got 2xx."""
    try:
        _deliver(job_id)
    finally:
        db.session.remove()


def _deliver(job_id: int) -> None:
    job = db.session.get(Job, job_id)
    if job is None or not job.is_finished:
        return  # deleted meanwhile: nothing to tell
    already = db.session.scalar(
        select(WebhookDelivery.id).where(
            WebhookDelivery.job_id == job_id,
            WebhookDelivery.status_code >= 200,
            WebhookDelivery.status_code < 300,
        )
    )
    if already is not None:
        return  # delivered: a webhook arrives once per job
    submission = job.user_image.submission
    url, secret = submission.callback_url, _signing_secret(submission)
    if not url or not secret:
        return
    body = json.dumps(payload(job)).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body),
        "X-Nova-Event": EVENT_FINISHED,
    }
    status: int | None = None
    error: str | None = None
    try:
        status = download.post(
            url,
            body,
            headers=headers,
            timeout=settings().webhook_timeout,
            allow_private=settings().url_allow_private,
        )
    except download_targets.DownloadError as exc:
        error = str(exc)
    if status is not None and not 200 <= status < 300:
        error = f"the receiver answered {status}"
    db.session.add(WebhookDelivery(job_id=job_id, status_code=status, error=error))
    db.session.commit()
    if error is None:
        metrics.callback_delivery("delivered")
    else:
        tries = db.session.scalar(select(func.count()).where(WebhookDelivery.job_id == job_id))
        last = (tries or 0) > len(settings().webhook_retry_intervals)
        metrics.callback_delivery("gave_up" if last else "retrying")
    if error is not None:
        log.info("webhook of job %s not delivered: %s", job_id, error)
        raise DeliveryFailed(error)
    log.info("webhook of job %s delivered (%s)", job_id, status)


def deliveries(job: Job) -> list[dict[str, Any]]:
    """The job's delivery tries, oldest first, as /api/jobs/J/info and the job page list them."""
    rows = db.session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job.id)
        .order_by(WebhookDelivery.attempted_at, WebhookDelivery.id)
    ).all()
    return [
        {
            "attempted_at": str(row.attempted_at),
            "status_code": row.status_code,
            "delivered": row.delivered,
            "error": row.error,
        }
        for row in rows
    ]
