"""The OpenAPI document's routes: one ``Endpoint`` per /api/ route (and per file route)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


def read_by_id(
    path: str,
    summary: str,
    answer: str | dict[str, Any],
    description: str = "",
    *,
    not_found: str = JOB_404,
    **more: Any,
) -> Endpoint:
    """A read of what one id names (a job's status, calibration, tags; a submission; a
    batch): GET or POST with the optional session, never nova's error envelope, a JSON 404
    for a missing or private id."""
    return Endpoint(
        path,
        READ,
        summary,
        answer,
        description,
        request="SessionArgs",
        request_required=False,
        refusals=False,
        not_found=not_found,
        **more,
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
    read_by_id(
        "/api/submissions/{submission_id}",
        "Submission status",
        "SubmissionStatus",
        "Poll until `jobs` holds ids and they end." + SOLVE_RESULT,
        not_found="submission does not exist",
    ),
    read_by_id(
        "/api/jobs/{job_id}",
        "Job status",
        "JobStatus",
        "`processing` while queued, then `solving`, then `success` or `failure`." + SOLVE_RESULT,
    ),
    read_by_id(
        "/api/jobs/{job_id}/calibration",
        "The solved field: centre, size, scale, orientation, parity",
        "Calibration",
        SOLVE_RESULT.strip(),
        also=("NoCalibration",),
    ),
    read_by_id(
        "/api/jobs/{job_id}/tags",
        "Every tag of the job's image (users' and the machine's)",
        "Tags",
        "The image's owner, or anyone for a public image.",
    ),
    read_by_id(
        "/api/jobs/{job_id}/machine_tags",
        "The machine's tags: objects found in the field",
        "Tags",
        SOLVE_RESULT.strip(),
    ),
    read_by_id(
        "/api/jobs/{job_id}/objects_in_field",
        "Named objects in the field",
        "ObjectsInField",
        SOLVE_RESULT.strip(),
    ),
    read_by_id(
        "/api/jobs/{job_id}/info",
        "Job summary: status, file name, objects, tags, calibration, hints",
        "JobInfo",
        "An id-holder who may not see the image gets the machine's tags only." + SOLVE_RESULT,
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
    read_by_id(
        "/api/batches/{batch_id}",
        "A time series' progress and each frame's result",
        "BatchStatus",
        tag="time series",
        not_found="batch does not exist",
    ),
    read_by_id(
        "/api/batches/{batch_id}/calibrations.csv",
        "A time series' calibrations as CSV",
        {
            "description": "`file,job,ra,dec,orientation,pixscale,radius,parity`, one row "
            "per frame in part order (empty numbers for frames that did not solve).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        tag="time series",
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
