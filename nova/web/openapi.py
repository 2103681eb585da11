"""The OpenAPI 3.1 document of Nova's JSON API (served at /api/openapi.json, shown at
/api/docs): the schemas once in ``SCHEMAS``, then one ``Endpoint`` per route in ``ENDPOINTS``.

A new endpoint is one more ``Endpoint`` (and its schemas): tests/test_openapi.py fails while
a route under /api/ is missing here or a method it answers is not documented.

nova's conventions are stated once, in ``DESCRIPTION``, and each endpoint's entry follows
them: arguments in the form field ``request-json``; answers JSON sent as ``text/plain``;
refusals HTTP 200 with ``{"status": "error", "errormessage": ...}``; a missing or private id
a JSON 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nova.engine.params import MAX_ROW_ID, SCALE_UNIT_ALIASES

TEXT_JSON = "text/plain"  # nova's answers: JSON text labelled text/plain
DESCRIPTION = """\
Nova speaks nova.astrometry.net's JSON API, so its clients (astroquery, client.py, N.I.N.A.,
KStars/StellarSolver, AstroImageJ, astrometry-net-client) work unchanged, and adds endpoints
of its own (time series).

**Conventions (nova's):**

- Arguments are one form field, `request-json`, holding a JSON object
  (`application/x-www-form-urlencoded`, or `multipart/form-data` with a file part).
  Its schema is given as the field's `contentSchema`.
- Answers are JSON sent as `text/plain` (the schemas below describe the parsed JSON).
- Refusals are **HTTP 200** with `{"status": "error", "errormessage": "..."}`, as nova's
  clients expect; the message says what was wrong.
- A submission, job or batch id that does not exist, or that is private to someone else,
  answers a JSON **404** with the same envelope.
- Read endpoints answer GET and POST; every path is matched with or without a trailing
  slash and never redirects.
- Signing in: `login` with your API key gives a `session`, sent in `request-json` (or kept
  as the cookie `login` sets). Read endpoints take it, or the cookie, to show your private
  images; a private job's solve result also answers whoever holds its id for
  `NOVA_ID_ACCESS_HOURS`.
- While the database is down every endpoint answers 503 with `Retry-After`.
"""

ID = {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


NUMBER_OR_TEXT = "a number (a numeric string is taken too)"
FLAG = 'true or false (the strings "true"/"false" are taken too)'

UPLOAD_OPTIONS: dict[str, Any] = {
    "session": {"type": "string", "description": "The session key from `login`."},
    "publicly_visible": {
        "enum": ["y", "n"],
        "description": "Visibility of the images; default NOVA_API_DEFAULT_VISIBILITY (y).",
    },
    "allow_commercial_use": {"enum": ["y", "n", "d"], "default": "d"},
    "allow_modifications": {"enum": ["y", "sa", "n", "d"], "default": "d"},
    "album": {"type": "string", "description": "Title of one of your own albums."},
    "scale_units": {
        "enum": sorted(SCALE_UNIT_ALIASES),
        "default": "degwidth",
        "description": "Units of the scale hint (aliases accepted).",
    },
    "scale_type": {
        "enum": ["ul", "ev"],
        "default": "ul",
        "description": "ul: lower and upper bounds; ev: estimate and error (percent).",
    },
    "scale_lower": {"type": "number", "minimum": 0, "default": 0.1, "description": NUMBER_OR_TEXT},
    "scale_upper": {"type": "number", "minimum": 0, "default": 180, "description": NUMBER_OR_TEXT},
    "scale_est": {"type": "number", "exclusiveMinimum": 0, "description": "With scale_type ev."},
    "scale_err": {
        "type": "number",
        "minimum": 0,
        "maximum": 99.999,
        "description": "Percent, with scale_type ev.",
    },
    "center_ra": {
        "type": "number",
        "minimum": 0,
        "maximum": 360,
        "description": "Degrees; a position hint needs center_ra, center_dec and radius.",
    },
    "center_dec": {"type": "number", "minimum": -90, "maximum": 90, "description": "Degrees."},
    "radius": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 180,
        "description": "Degrees.",
    },
    "parity": {
        "enum": [0, 1, 2],
        "default": 2,
        "description": "0 positive, 1 negative, 2 try both.",
    },
    "tweak_order": {"type": "integer", "minimum": 0, "maximum": 9, "default": 2},
    "downsample_factor": {"type": "integer", "minimum": 1, "maximum": 32, "default": 2},
    "positional_error": {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "Pixels (engine default 1).",
    },
    "crpix_center": {"type": "boolean", "default": False, "description": FLAG},
    "invert": {"type": "boolean", "default": False, "description": FLAG},
    "use_sextractor": {"type": "boolean", "default": False, "description": FLAG},
    "callback_url": {
        "type": "string",
        "format": "uri",
        "description": "Nova's own option: POST the job's end here (a webhook signed with "
        "X-Nova-Signature: sha256=HMAC-SHA256 of the body, keyed by the account's webhook "
        "secret); the same address rules as URL uploads.",
    },
    "use_header_hints": {
        "type": "boolean",
        "default": True,
        "description": "Try the file header's scale and position first. " + FLAG,
    },
    "image_width": {
        "type": "integer",
        "minimum": 0,
        "maximum": 1_000_000,
        "description": "Field width in pixels of a star list.",
    },
    "image_height": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
}
STAR_LISTS: dict[str, Any] = {
    "x": {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 1,
        "description": "Star x positions, brightest first (with y, instead of a file).",
    },
    "y": {"type": "array", "items": {"type": "number"}, "minItems": 1},
}
CALIBRATION_FIELDS: dict[str, Any] = {
    "ra": {"type": "number", "description": "Centre RA, degrees."},
    "dec": {"type": "number", "description": "Centre Dec, degrees."},
    "radius": {"type": "number", "description": "Centre-to-corner radius, degrees."},
    "pixscale": {"type": "number", "description": "Arcseconds per pixel."},
    "orientation": {"type": "number", "description": "Degrees east of north."},
    "parity": {"enum": [1.0, -1.0]},
}
SIZE_FIELDS: dict[str, Any] = {
    "width_arcsec": {"type": "number"},
    "height_arcsec": {"type": "number"},
}
FRAME_CALIBRATION = {"type": "object", "properties": {**CALIBRATION_FIELDS, **SIZE_FIELDS}}


def _object(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


# Nova's own keys in the status answers while a job waits or runs; absent once it ends.
PROGRESS: dict[str, Any] = {
    "queue_position": _nullable(
        {"type": "integer", "minimum": 0, "description": "Solves ahead of it; 0 when solving."}
    ),
    "eta_seconds": _nullable(
        {"type": "number", "description": "Seconds until it ends, from recent solves."}
    ),
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _object(
        {"status": {"const": "error"}, "errormessage": {"type": "string"}},
        ["status", "errormessage"],
        description="nova's error envelope (HTTP 200 for refusals, 404 for missing ids).",
    ),
    "NoCalibration": _object(
        {"error": {"type": "string", "examples": ["no calibration data available for job 7"]}},
        ["error"],
    ),
    "SessionArgs": _object({"session": UPLOAD_OPTIONS["session"]}, ["session"]),
    "LoginArgs": _object({"apikey": {"type": "string"}}, ["apikey"]),
    "LoginAnswer": _object(
        {
            "status": {"const": "success"},
            "message": {"type": "string", "examples": ["authenticated user: you@example.org"]},
            "session": {"type": "string"},
        },
        ["status", "session"],
    ),
    "UploadArgs": _object(
        {**UPLOAD_OPTIONS, **STAR_LISTS},
        ["session"],
        description="The upload options; x and y replace the file part.",
    ),
    "UrlUploadArgs": _object(
        {**UPLOAD_OPTIONS, **STAR_LISTS, "url": {"type": "string", "format": "uri"}},
        ["session"],
        description="An http(s) URL to fetch (checked, public addresses only), or x and y.",
    ),
    "BatchArgs": _object(
        {
            **UPLOAD_OPTIONS,
            "chain": {
                "type": "boolean",
                "default": True,
                "description": "Solve each frame first with the hints of those solved.",
            },
        },
        ["session"],
        description="Upload options applied to every frame.",
    ),
    "CancelAnswer": _object(
        {"status": {"const": "success"}, "job": ID, "job_status": {"const": "failure"}},
        ["status", "job", "job_status"],
    ),
    "DeleteAnswer": _object(
        {
            "status": {"const": "success"},
            "deleted": _object(
                {
                    "submission": ID,
                    "images": {"type": "integer"},
                    "jobs": {"type": "integer"},
                    "files": {"type": "integer"},
                },
                ["submission", "images", "jobs", "files"],
            ),
        },
        ["status", "deleted"],
    ),
    "UploadAnswer": _object(
        {
            "status": {"const": "success"},
            "subid": ID,
            "hash": {"type": "string", "description": "SHA-1 of the stored file."},
        },
        ["status", "subid"],
    ),
    "BatchAnswer": _object(
        {"status": {"const": "success"}, "batch": ID, "subids": {"type": "array", "items": ID}},
        ["status", "batch", "subids"],
    ),
    "SubmissionImagesArgs": _object(
        {"session": UPLOAD_OPTIONS["session"], "subid": ID}, ["session", "subid"]
    ),
    "SubmissionImages": _object(
        {"status": {"const": "success"}, "image_ids": {"type": "array", "items": ID}},
        ["status", "image_ids"],
    ),
    "SubmissionStatus": _object(
        {
            "user": _nullable({"type": "integer"}),
            "processing_started": {
                "type": "string",
                "description": 'str() of a naive UTC datetime, or the string "None".',
            },
            "processing_finished": {"type": "string"},
            "user_images": {"type": "array", "items": ID},
            "images": {"type": "array", "items": ID},
            "jobs": {"type": "array", "items": _nullable(ID)},
            "job_calibrations": {
                "type": "array",
                "items": {"type": "array", "prefixItems": [ID, ID], "minItems": 2, "maxItems": 2},
                "description": "[job id, calibration id] of each solved image.",
            },
            "error_message": {
                "type": "string",
                "description": "Present only when the submission failed as a whole.",
            },
            **PROGRESS,
        },
        ["user", "processing_started", "processing_finished", "user_images", "jobs"],
        description="No status key (as nova).",
    ),
    "JobStatus": _object(
        {"status": {"enum": ["processing", "solving", "success", "failure"]}, **PROGRESS},
        ["status"],
    ),
    "Calibration": _object(
        {**CALIBRATION_FIELDS, **SIZE_FIELDS}, [*CALIBRATION_FIELDS, *SIZE_FIELDS]
    ),
    "Tags": _object({"tags": {"type": "array", "items": {"type": "string"}}}, ["tags"]),
    "ObjectsInField": _object(
        {"objects_in_field": {"type": "array", "items": {"type": "string"}}},
        ["objects_in_field"],
    ),
    "JobInfo": _object(
        {
            "objects_in_field": {"type": "array", "items": {"type": "string"}},
            "machine_tags": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "status": {"enum": ["processing", "solving", "success", "failure"]},
            "original_filename": {"type": "string"},
            "calibration": _object(CALIBRATION_FIELDS, description="Present once solved."),
            "hints": _object(
                {
                    "source": {"enum": ["fits-header", "xisf", "exif", "user", "none"]},
                },
                description="Nova's own key: where the solve's scale and position hints came "
                "from (keywords, scale, position, from_header, wcs_verify_first, "
                "header_tried, notes).",
                additionalProperties=True,
            ),
            "quality": _nullable(
                _object(
                    {
                        "log_odds": {"type": "number"},
                        "matched_stars": {"type": "integer"},
                        "field_stars": {"type": "integer"},
                        "index_stars": {"type": "integer"},
                        "index": {"type": "integer", "description": "e.g. 4117: index-tycho2-17"},
                        "rms_arcsec": _nullable({"type": "number"}),
                        "tweak_order": {"type": "integer", "description": "SIP order; 0: TAN"},
                    },
                    description="Nova's own key: how good the solution is (the engine's match "
                    "and corr files); null when the job did not solve or predates it.",
                )
            ),
            "webhook_deliveries": {
                "type": "array",
                "description": "Nova's own key, when the upload gave a callback_url: each try.",
                "items": _object(
                    {
                        "attempted_at": {"type": "string"},
                        "status_code": _nullable({"type": "integer"}),
                        "delivered": {"type": "boolean"},
                        "error": _nullable({"type": "string"}),
                    },
                    ["attempted_at", "status_code", "delivered", "error"],
                ),
            },
            **PROGRESS,
        },
        ["objects_in_field", "machine_tags", "tags", "status", "original_filename"],
    ),
    "Annotations": _object(
        {
            "annotations": {
                "type": "array",
                "items": _object(
                    {
                        "type": {"enum": ["ngc", "ic", "bright"]},
                        "names": {"type": "array", "items": {"type": "string"}},
                        "pixelx": {"type": "number"},
                        "pixely": {"type": "number"},
                        "radius": {"type": "number", "description": "Pixels."},
                        "vmag": {"type": "number", "description": "Named stars only."},
                    },
                    ["type", "names", "pixelx", "pixely", "radius"],
                ),
            }
        },
        ["annotations"],
    ),
    "MyJobs": _object(
        {"jobs": {"type": "array", "items": ID}, "status": {"const": "success"}},
        ["jobs", "status"],
    ),
    "JobsByTag": _object({"job_ids": {"type": "array", "items": ID}}, ["job_ids"]),
    "BatchStatus": _object(
        {
            "status": {"enum": ["solving", "done"]},
            "total": {"type": "integer"},
            "solved": {"type": "integer"},
            "failed": {"type": "integer"},
            "frames": {
                "type": "array",
                "items": _object(
                    {
                        "subid": ID,
                        "job": _nullable(ID),
                        "file": {"type": "string"},
                        "status": {"enum": ["queued", "solving", "success", "failure"]},
                        "calibration": _nullable(FRAME_CALIBRATION),
                        "failure_reason": _nullable({"type": "string"}),
                    },
                    ["subid", "job", "file", "status", "calibration", "failure_reason"],
                ),
                "description": "In part order.",
            },
        },
        ["status", "total", "solved", "failed", "frames"],
    ),
}


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One route: ``path`` in OpenAPI's notation (``{job_id}``), its methods, the schema of
    its ``request-json`` (a SCHEMAS name, or None when it takes none), and its answer."""

    path: str
    methods: tuple[str, ...]
    summary: str
    answer: str | dict[str, Any]  # a SCHEMAS name, or a whole response object
    description: str = ""
    tag: str = "nova"
    request: str | None = None
    request_required: bool = True
    files: str | None = None  # the description of the multipart "file" part(s), if any
    files_many: bool = False
    query: tuple[Query, ...] = ()
    refusals: bool = True  # may answer nova's error envelope with HTTP 200
    also: tuple[str, ...] = ()  # more SCHEMAS the 200 answer may be (e.g. NoCalibration)
    not_found: str | None = None  # the 404 message when the id is missing or private
    too_large: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # more "parameters", "responses"


READ = ("GET", "POST")
JOB_404 = "job does not exist"
SOLVE_RESULT = (
    " Part of the solve result: a private job's answers whoever holds its id for "
    "NOVA_ID_ACCESS_HOURS."
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/api/login",
        READ,
        "Sign in with an API key",
        "LoginAnswer",
        "Opens an API session (NOVA_API_SESSION_DAYS) and sets its cookie for API clients. "
        'Errors: `need "apikey"`, `bad apikey`.',
        request="LoginArgs",
    ),
    Endpoint(
        "/api/upload",
        READ,
        "Upload an image, archive or star list",
        "UploadAnswer",
        "A file part named `file` (image, FITS, XISF, star list, zip or tar of them), or x "
        "and y lists in request-json. Every option is checked before anything is stored: "
        "the error names the option, e.g. `invalid parity: ...`.",
        request="UploadArgs",
        files="The image, archive or star list.",
        too_large=True,
    ),
    Endpoint(
        "/api/url_upload",
        READ,
        "Upload from a URL (or x and y lists, as astroquery sends)",
        "UploadAnswer",
        "The worker fetches the URL; the answer has no `hash` then.",
        request="UrlUploadArgs",
    ),
    Endpoint(
        "/api/upload_batch",
        ("POST",),
        "Upload a time series: many frames in one request",
        "BatchAnswer",
        "N parts named `file`, one per frame, in order; each becomes an ordinary submission. "
        "Limits NOVA_BATCH_MAX_FRAMES and NOVA_BATCH_MAX_MB.",
        tag="time series",
        request="BatchArgs",
        files="One frame (anything `upload` takes).",
        files_many=True,
        too_large=True,
    ),
    Endpoint(
        "/api/submission_images",
        READ,
        "The image ids of a submission",
        "SubmissionImages",
        "Error: `submission does not exist`.",
        request="SubmissionImagesArgs",
    ),
    Endpoint(
        "/api/submissions/{submission_id}",
        READ,
        "Submission status",
        "SubmissionStatus",
        "Poll until `jobs` holds ids and they end." + SOLVE_RESULT,
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found="submission does not exist",
    ),
    Endpoint(
        "/api/jobs/{job_id}",
        READ,
        "Job status",
        "JobStatus",
        "`processing` while queued, then `solving`, then `success` or `failure`." + SOLVE_RESULT,
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/jobs/{job_id}/calibration",
        READ,
        "The solved field: centre, size, scale, orientation, parity",
        "Calibration",
        SOLVE_RESULT.strip(),
        request="SessionArgs",
        request_required=False,
        refusals=False,
        also=("NoCalibration",),
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/jobs/{job_id}/tags",
        READ,
        "Every tag of the job's image (users' and the machine's)",
        "Tags",
        "The image's owner, or anyone for a public image.",
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/jobs/{job_id}/machine_tags",
        READ,
        "The machine's tags: objects found in the field",
        "Tags",
        SOLVE_RESULT.strip(),
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/jobs/{job_id}/objects_in_field",
        READ,
        "Named objects in the field",
        "ObjectsInField",
        SOLVE_RESULT.strip(),
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/jobs/{job_id}/info",
        READ,
        "Job summary: status, file name, objects, tags, calibration, hints",
        "JobInfo",
        "An id-holder who may not see the image gets the machine's tags only." + SOLVE_RESULT,
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/jobs/{job_id}/annotations",
        READ,
        "Catalogue objects with pixel positions",
        "Annotations",
        SOLVE_RESULT.strip(),
        request="SessionArgs",
        request_required=False,
        query=(
            Query(
                "nbright",
                {"type": "integer", "minimum": 0},
                "Keep only the N brightest named stars.",
            ),
        ),
        also=("NoCalibration",),
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/myjobs",
        READ,
        "Every job of the signed-in user, oldest first",
        "MyJobs",
        request="SessionArgs",
    ),
    Endpoint(
        "/api/myjobs/{rest}",
        READ,
        "The same as myjobs (nova matches anything after myjobs/)",
        "MyJobs",
        request="SessionArgs",
        extra={
            "parameters": [
                {
                    "name": "rest",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "Ignored.",
                }
            ]
        },
    ),
    Endpoint(
        "/api/jobs_by_tag",
        READ,
        "Jobs whose image has a tag (images you may see)",
        "JobsByTag",
        'Error: `need "query"`.',
        request="SessionArgs",
        request_required=False,
        query=(
            Query("query", {"type": "string"}, "The tag text (a substring unless exact).", True),
            Query("exact", {"type": "string"}, "Any non-empty value: whole tag, any case."),
        ),
    ),
    Endpoint(
        "/api/batches/{batch_id}",
        READ,
        "A time series' progress and each frame's result",
        "BatchStatus",
        tag="time series",
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found="batch does not exist",
    ),
    Endpoint(
        "/api/batches/{batch_id}/calibrations.csv",
        READ,
        "A time series' calibrations as CSV",
        {
            "description": "`file,job,ra,dec,orientation,pixscale,radius,parity`, one row "
            "per frame in part order (empty numbers for frames that did not solve).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        tag="time series",
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found="batch does not exist",
    ),
    Endpoint(
        "/api/jobs/{job_id}/cancel",
        ("POST",),
        "Cancel a queued or solving job (its owner)",
        "CancelAnswer",
        "The job ends `failure` with the reason `cancelled by the user`; a queued one never "
        "runs, a solving one's engine processes are killed within 2 s. Error: "
        "`job J has ended already (...)`.",
        tag="control",
        request="SessionArgs",
        not_found=JOB_404,
    ),
    Endpoint(
        "/api/submissions/{submission_id}/delete",
        ("POST",),
        "Delete a submission for good (its owner)",
        "DeleteAnswer",
        "Its images, jobs, products and stored files (a file another upload shares stays); "
        "unfinished jobs are cancelled first. Afterwards its pages and answers are 404.",
        tag="control",
        request="SessionArgs",
        not_found="submission does not exist",
    ),
    *(
        Endpoint(
            f"/api/{kind}s/{{{kind}_id}}/events",
            ("GET",),
            f"Live events of a {kind} (server-sent events)",
            {
                "description": "text/event-stream: one event per change, named queued, "
                f"extracting, solving, success or failure, its data the {kind}'s status "
                "answer; closed after the final one. Last-Event-ID resumes. 204 when "
                "nothing newer will come.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "The status answer's visibility rules apply. Over NOVA_EVENTS_MAX_WATCHERS "
            "streams per web process: 503 with Retry-After (poll instead).",
            tag="events",
            refusals=False,
            not_found=f"{kind} does not exist",
        )
        for kind in ("job", "submission")
    ),
    Endpoint(
        "/api/openapi.json",
        ("GET",),
        "This document",
        {
            "description": "The OpenAPI 3.1 document.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        tag="documentation",
        refusals=False,
    ),
    Endpoint(
        "/api/docs",
        ("GET",),
        "This document, readable in a browser",
        {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}},
        tag="documentation",
        refusals=False,
    ),
)


def _file(name: str, what: str, media: str, *, solve_result: bool = False) -> Endpoint:
    """A job's file, outside /api/ as on nova: the owner's (the cookie `login` sets, or a
    web session), anyone's for a public image; 404 is a page, not JSON."""
    return Endpoint(
        f"/{name}/{{job_id}}",
        READ,
        what,
        {
            "description": f"The file ({media}).",
            "content": {media: {"schema": {"type": "string", "contentMediaType": media}}},
        },
        SOLVE_RESULT.strip() if solve_result else "",
        tag="files",
        refusals=False,
        extra={
            "responses": {
                "404": {
                    "description": "No such job, not visible to the caller, or no such file "
                    "(an unsolved job has no WCS).",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "503": {
                    "description": "The database is unavailable; try again after Retry-After.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
            }
        },
    )


FITS = "application/fits"
FILE_ENDPOINTS: tuple[Endpoint, ...] = (
    _file("wcs_file", "The solution: wcs.fits (TAN and SIP header)", FITS, solve_result=True),
    _file("new_fits_file", "The image as FITS with the solution's header", FITS),
    _file("rdls_file", "Index stars in the field (RA, Dec): rdls.fits", FITS),
    _file("axy_file", "Extracted sources (x, y): axy.fits", FITS),
    _file("corr_file", "Matched field and index stars: corr.fits", FITS),
    _file("image_rd_file", "Extracted sources in RA, Dec: image-radec.fits", FITS),
    _file("kml_file", "The field for Google Earth's sky mode", "application/vnd.google-earth.kmz"),
    _file("joblog", "The engine's log", "text/plain"),
)


def _request_body(endpoint: Endpoint) -> dict[str, Any]:
    assert endpoint.request is not None
    request_json = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": ref(endpoint.request),
        "description": "A JSON object (contentSchema).",
    }
    form = _object(
        {"request-json": request_json}, ["request-json"] if endpoint.request_required else None
    )
    content: dict[str, Any] = {"application/x-www-form-urlencoded": {"schema": form}}
    multipart = _object(dict(form["properties"]), form.get("required"))
    if endpoint.files is not None:
        part: dict[str, Any] = {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": endpoint.files,
        }
        multipart["properties"]["file"] = (
            {"type": "array", "items": part, "description": endpoint.files}
            if endpoint.files_many
            else part
        )
    content["multipart/form-data"] = {"schema": multipart}
    return {"required": endpoint.request_required, "content": content}


def _answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT_JSON: {"schema": schema}}}


def _operation(endpoint: Endpoint, method: str) -> dict[str, Any]:
    operation_id = (
        endpoint.path.removeprefix("/api/")
        .replace("/", "_")
        .replace("{", "")
        .replace("}", "")
        .replace(".", "_")
    )
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{operation_id}",
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": ID}
        for name in _path_names(endpoint.path)
        if name != "rest"
    ]
    parameters += endpoint.extra.get("parameters", [])
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "schema": q.schema,
            "description": q.description,
        }
        for q in endpoint.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.request is not None and method == "POST":
        operation["requestBody"] = _request_body(endpoint)
    if isinstance(endpoint.answer, dict):
        ok = endpoint.answer
    else:
        choices = [ref(endpoint.answer), *(ref(name) for name in endpoint.also)]
        if endpoint.refusals:
            choices.append(ref("Error"))
        schema = choices[0] if len(choices) == 1 else {"oneOf": choices}
        ok = _answer(
            schema,
            "The answer"
            + (", or nova's error envelope for a refusal." if endpoint.refusals else "."),
        )
    responses: dict[str, Any] = {"200": ok}
    if endpoint.not_found:
        responses["404"] = _answer(
            ref("Error"), f"The id does not exist or is private: `{endpoint.not_found}`."
        )
    if endpoint.too_large:
        responses["413"] = _answer(ref("Error"), "The request is larger than the upload limit.")
    responses.update(endpoint.extra.get("responses", {}))
    responses.setdefault("503", {"$ref": "#/components/responses/Unavailable"})
    operation["responses"] = responses
    return operation


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS + FILE_ENDPOINTS:
        item = paths.setdefault(endpoint.path, {})
        for method in endpoint.methods:
            item[method.lower()] = _operation(endpoint, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Nova (nova.astrometry.net-compatible plate solving)",
            "version": "1",
            "description": DESCRIPTION,
            "license": {"name": "BSD-3-Clause", "identifier": "BSD-3-Clause"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "nova", "description": "nova.astrometry.net's API, as its clients use it."},
            {"name": "time series", "description": "Nova's own: many frames in one request."},
            {"name": "events", "description": "Nova's own: live events instead of polling."},
            {"name": "control", "description": "Nova's own: the owner cancels and deletes."},
            {
                "name": "files",
                "description": "A job's files, outside /api/ (nova's paths): GET or POST.",
            },
            {"name": "documentation", "description": "This document."},
        ],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                "Unavailable": {
                    "description": "The database is unavailable; try again after Retry-After.",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {TEXT_JSON: {"schema": ref("Error")}},
                }
            },
        },
    }
