"""nova's JSON API under /api/, wire-compatible with its clients.

Conventions kept from nova (see nova-clients.md section 0): arguments arrive as one form
field ``request-json``; answers are JSON sent as ``text/plain``; errors are HTTP 200
``{"status": "error", "errormessage": ...}`` with nova's texts; read endpoints answer GET
and POST, with or without a trailing slash. Fixed: every argument is validated before
anything is stored, and private images are visible to their owner only, on every endpoint,
but for the solve result that nova.services.access opens to whoever holds the id.
"""

from __future__ import annotations

from nova.web.api import results, uploads
from nova.web.api.protocol import (
    ANY_METHOD,
    ApiError,
    api_error,
    bp,
    fail,
    json_args,
    reply,
    require_login,
    require_session,
)
from nova.web.api.results import job_status, submission_status
from nova.web.api.uploads import upload_options

# The blueprint and what batches and events share with the API; results and uploads are
# imported for their routes, which join ``bp``.
__all__ = [
    "ANY_METHOD",
    "ApiError",
    "api_error",
    "bp",
    "fail",
    "job_status",
    "json_args",
    "reply",
    "require_login",
    "require_session",
    "results",
    "submission_status",
    "upload_options",
    "uploads",
]
