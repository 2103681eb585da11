"""The OpenAPI document's schemas: every request-json and answer, once, by name in SCHEMAS."""

from __future__ import annotations

from typing import Any

from nova.engine.params import MAX_ROW_ID, SCALE_UNIT_ALIASES

ID = {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
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


def object_schema(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


# Nova's own keys in the status answers while a job waits or runs; absent once it ends.
PROGRESS: dict[str, Any] = {
    "queue_position": nullable(
        {"type": "integer", "minimum": 0, "description": "Solves ahead of it; 0 when solving."}
    ),
    "eta_seconds": nullable(
        {"type": "number", "description": "Seconds until it ends, from recent solves."}
    ),
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": object_schema(
        {"status": {"const": "error"}, "errormessage": {"type": "string"}},
        ["status", "errormessage"],
        description="nova's error envelope (HTTP 200 for refusals, 404 for missing ids).",
    ),
    "NoCalibration": object_schema(
        {"error": {"type": "string", "examples": ["no calibration data available for job 7"]}},
        ["error"],
    ),
    "SessionArgs": object_schema({"session": UPLOAD_OPTIONS["session"]}, ["session"]),
    "LoginArgs": object_schema({"apikey": {"type": "string"}}, ["apikey"]),
    "LoginAnswer": object_schema(
        {
            "status": {"const": "success"},
            "message": {"type": "string", "examples": ["authenticated user: you@example.org"]},
            "session": {"type": "string"},
        },
        ["status", "session"],
    ),
    "UploadArgs": object_schema(
        {**UPLOAD_OPTIONS, **STAR_LISTS},
        ["session"],
        description="The upload options; x and y replace the file part.",
    ),
    "UrlUploadArgs": object_schema(
        {**UPLOAD_OPTIONS, **STAR_LISTS, "url": {"type": "string", "format": "uri"}},
        ["session"],
        description="An http(s) URL to fetch (checked, public addresses only), or x and y.",
    ),
    "BatchArgs": object_schema(
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
    "CancelAnswer": object_schema(
        {"status": {"const": "success"}, "job": ID, "job_status": {"const": "failure"}},
        ["status", "job", "job_status"],
    ),
    "DeleteAnswer": object_schema(
        {
            "status": {"const": "success"},
            "deleted": object_schema(
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
    "UploadAnswer": object_schema(
        {
            "status": {"const": "success"},
            "subid": ID,
            "hash": {"type": "string", "description": "SHA-1 of the stored file."},
        },
        ["status", "subid"],
    ),
    "BatchAnswer": object_schema(
        {"status": {"const": "success"}, "batch": ID, "subids": {"type": "array", "items": ID}},
        ["status", "batch", "subids"],
    ),
    "SubmissionImagesArgs": object_schema(
        {"session": UPLOAD_OPTIONS["session"], "subid": ID}, ["session", "subid"]
    ),
    "SubmissionImages": object_schema(
        {"status": {"const": "success"}, "image_ids": {"type": "array", "items": ID}},
        ["status", "image_ids"],
    ),
    "SubmissionStatus": object_schema(
        {
            "user": nullable({"type": "integer"}),
            "processing_started": {
                "type": "string",
                "description": 'str() of a naive UTC datetime, or the string "None".',
            },
            "processing_finished": {"type": "string"},
            "user_images": {"type": "array", "items": ID},
            "images": {"type": "array", "items": ID},
            "jobs": {"type": "array", "items": nullable(ID)},
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
    "JobStatus": object_schema(
        {"status": {"enum": ["processing", "solving", "success", "failure"]}, **PROGRESS},
        ["status"],
    ),
    "Calibration": object_schema(
        {**CALIBRATION_FIELDS, **SIZE_FIELDS}, [*CALIBRATION_FIELDS, *SIZE_FIELDS]
    ),
    "Tags": object_schema({"tags": {"type": "array", "items": {"type": "string"}}}, ["tags"]),
    "ObjectsInField": object_schema(
        {"objects_in_field": {"type": "array", "items": {"type": "string"}}},
        ["objects_in_field"],
    ),
    "JobInfo": object_schema(
        {
            "objects_in_field": {"type": "array", "items": {"type": "string"}},
            "machine_tags": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "status": {"enum": ["processing", "solving", "success", "failure"]},
            "original_filename": {"type": "string"},
            "calibration": object_schema(CALIBRATION_FIELDS, description="Present once solved."),
            "hints": object_schema(
                {
                    "source": {"enum": ["fits-header", "xisf", "exif", "user", "none"]},
                },
                description="Nova's own key: where the solve's scale and position hints came "
                "from (keywords, scale, position, from_header, wcs_verify_first, "
                "header_tried, notes).",
                additionalProperties=True,
            ),
            "quality": nullable(
                object_schema(
                    {
                        "log_odds": {"type": "number"},
                        "matched_stars": {"type": "integer"},
                        "field_stars": {"type": "integer"},
                        "index_stars": {"type": "integer"},
                        "index": {"type": "integer", "description": "e.g. 4117: index-tycho2-17"},
                        "rms_arcsec": nullable({"type": "number"}),
                        "tweak_order": {"type": "integer", "description": "SIP order; 0: TAN"},
                    },
                    description="Nova's own key: how good the solution is (the engine's match "
                    "and corr files); null when the job did not solve or predates it.",
                )
            ),
            "webhook_deliveries": {
                "type": "array",
                "description": "Nova's own key, when the upload gave a callback_url: each try.",
                "items": object_schema(
                    {
                        "attempted_at": {"type": "string"},
                        "status_code": nullable({"type": "integer"}),
                        "delivered": {"type": "boolean"},
                        "error": nullable({"type": "string"}),
                    },
                    ["attempted_at", "status_code", "delivered", "error"],
                ),
            },
            **PROGRESS,
        },
        ["objects_in_field", "machine_tags", "tags", "status", "original_filename"],
    ),
    "Annotations": object_schema(
        {
            "annotations": {
                "type": "array",
                "items": object_schema(
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
    "MyJobs": object_schema(
        {"jobs": {"type": "array", "items": ID}, "status": {"const": "success"}},
        ["jobs", "status"],
    ),
    "JobsByTag": object_schema({"job_ids": {"type": "array", "items": ID}}, ["job_ids"]),
    "BatchStatus": object_schema(
        {
            "status": {"enum": ["solving", "done"]},
            "total": {"type": "integer"},
            "solved": {"type": "integer"},
            "failed": {"type": "integer"},
            "frames": {
                "type": "array",
                "items": object_schema(
                    {
                        "subid": ID,
                        "job": nullable(ID),
                        "file": {"type": "string"},
                        "status": {"enum": ["queued", "solving", "success", "failure"]},
                        "calibration": nullable(FRAME_CALIBRATION),
                        "failure_reason": nullable({"type": "string"}),
                    },
                    ["subid", "job", "file", "status", "calibration", "failure_reason"],
                ),
                "description": "In part order.",
            },
        },
        ["status", "total", "solved", "failed", "frames"],
    ),
}
