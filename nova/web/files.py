"""Files and pictures outside /api/, at nova's URLs, with exact content types.

No human check and no Referer requirement: API clients fetch these directly. Private images
are served to their owner only (API session cookie from /api/login); to anyone else they
answer exactly like an id that does not exist -- except the WCS file, part of the solve
result that nova.services.access opens to whoever holds the job id. Everything derived is built
once, on first request, then served from its file with caching headers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Response, abort, send_file

from nova.db.models import Calibration, Job, UserImage
from nova.engine import sandbox
from nova.engine.input_formats import PreparedInput, UnsupportedInput
from nova.engine.job_files import AXY_NAME, CORR_NAME, RDLS_NAME, WCS_NAME
from nova.engine.redaction import without_server_paths
from nova.extensions import db, settings
from nova.render import pictures, sky
from nova.render.products import (
    JOB_PRODUCTS,
    JobContext,
    JobFacts,
    ProductUnavailable,
    build_once,
    job_product_path,
)
from nova.services import storage
from nova.services.access import can_read_result, can_view
from nova.services.intake import decode_limits, image_preparer
from nova.services.jobs import job_log_text
from nova.web.auth import current_user

bp = Blueprint("files", __name__)
ANY_METHOD = ["GET", "POST"]
FITS = "application/fits"
DIRECT_MIMETYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
ONE_DAY = 86400


def visible_job(job_id: int, *, solve_result: bool = False) -> Job:
    """The job if the caller may see its image, or (``solve_result``) holds its id."""
    job = db.session.get(Job, job_id)
    if job is None:
        abort(404, f"There is no job {job_id}.")
    user = current_user()
    if not (can_read_result(job, user) if solve_result else can_view(job.user_image, user)):
        abort(404, f"There is no job {job_id}.")
    return job


def visible_image(image_id: int) -> UserImage:
    image = db.session.get(UserImage, image_id)
    if image is None or not can_view(image, current_user()):
        abort(404, f"There is no image {image_id}.")
    return image


def serve(
    path: Path, mimetype: str, image: UserImage, download_name: str | None = None
) -> Response:
    response = send_file(
        path,
        mimetype=mimetype,
        as_attachment=download_name is not None,
        download_name=download_name,
        max_age=ONE_DAY,
    )
    # Products never change once built (a new solve is a new job id); private ones must not
    # be kept by shared caches.
    response.cache_control.public = image.publicly_visible == "y"
    response.cache_control.private = image.publicly_visible != "y"
    return response


def send_product(
    job_id: int, name: str, download_name: str, mimetype: str, *, solve_result: bool = False
) -> Response:
    job = visible_job(job_id, solve_result=solve_result)
    path = storage().job_file(job_id, name)
    if path is None:
        abort(404, f"Job {job_id} has no {download_name}.")
    return serve(path, mimetype, job.user_image, download_name)


def with_prepared_image(
    image: UserImage,
    target: Path,
    use: Callable[[Callable[[], PreparedInput], Path], Path],
    what: str,
) -> Path:
    """``target``, built first when missing by ``use(prepare, scratch directory)``.

    The build decodes the upload (``prepare``) and draws it, so it runs whole in a sandboxed
    child process (NOVA_DECODE_* limits): the web process itself never decodes an upload.
    """
    if target.exists():
        return target
    store = storage()
    work_dir = store.make_work_dir("picture-")
    limits = decode_limits(settings().decode_cpu_seconds)
    try:
        prepare = image_preparer(image, work_dir) if image.file_hash else _no_upload
        return sandbox.run_limited(use, prepare, work_dir, limits=limits)
    except ProductUnavailable as exc:
        abort(404, str(exc))
    except (OSError, ValueError, UnsupportedInput, RuntimeError) as exc:
        # The stored upload cannot be drawn (or a limit stopped it): not a server fault.
        abort(422, f"Could not build {what}: {without_server_paths(str(exc))}")
    finally:
        store.discard(work_dir)


def _no_upload() -> PreparedInput:
    raise ProductUnavailable("This upload holds no image.")


def send_job_product(job_id: int, name: str) -> Response:
    job = visible_job(job_id)
    product = JOB_PRODUCTS[name]
    job_dir = storage().job_dir(job_id)
    # Loaded here: the build runs in a forked child, which must not query the database.
    job.calibration, job.user_image.original_filename  # noqa: B018

    def build(prepare: Callable[[], PreparedInput], work_dir: Path) -> Path:
        facts = JobFacts(
            job.id,
            job.user_image.kind,
            job.user_image.original_filename,
            job.calibration.radius if job.calibration else None,
            settings().max_render_pixels,
        )
        return job_product_path(JobContext(facts, job_dir, prepare, work_dir), product)

    path = with_prepared_image(job.user_image, job_dir / product.filename, build, product.filename)
    return serve(path, product.mimetype, job.user_image, product.download_name)


def _job_product_route(name: str) -> None:
    def view(job_id: int) -> Response:
        return send_job_product(job_id, name)

    view.__name__ = name
    bp.add_url_rule(f"/{name}/<int:job_id>", name, view, methods=ANY_METHOD)


for _name in JOB_PRODUCTS:
    _job_product_route(_name)


@bp.route("/wcs_file/<int:job_id>", methods=ANY_METHOD)
def wcs_file(job_id: int) -> Response:
    return send_product(job_id, WCS_NAME, "wcs.fits", FITS, solve_result=True)


@bp.route("/rdls_file/<int:job_id>", methods=ANY_METHOD)
def rdls_file(job_id: int) -> Response:
    return send_product(job_id, RDLS_NAME, "rdls.fits", FITS)


@bp.route("/axy_file/<int:job_id>", methods=ANY_METHOD)
def axy_file(job_id: int) -> Response:
    return send_product(job_id, AXY_NAME, "axy.fits", FITS)


@bp.route("/corr_file/<int:job_id>", methods=ANY_METHOD)
def corr_file(job_id: int) -> Response:
    return send_product(job_id, CORR_NAME, "corr.fits", FITS)


@bp.route("/joblog/<int:job_id>", methods=ANY_METHOD)
def joblog(job_id: int) -> Response:
    job = visible_job(job_id)
    text = job_log_text(job_id)
    if text is None:
        abort(404, f"Job {job_id} has no log yet.")
    response = Response(text, mimetype="text/plain")
    # The log changes while the job runs: always revalidated; a private one never shared.
    response.cache_control.no_cache = True
    response.cache_control.private = job.user_image.publicly_visible != "y"
    return response


@bp.route("/sky_plot/zoom<int:zoom>/<int:calibration_id>", methods=ANY_METHOD)
def sky_plot(zoom: int, calibration_id: int) -> Response:
    calibration = db.session.get(Calibration, calibration_id)
    if calibration is None or not can_view(calibration.job.user_image, current_user()):
        abort(404, f"There is no calibration {calibration_id}.")
    if zoom not in (0, 1, 2, 3):
        abort(404, "invalid zoom: use zoom0 (whole sky) to zoom3 (0.36 degrees wide)")
    job = calibration.job
    image = job.user_image
    target = storage().job_dir(job.id) / f"sky-plot-zoom{zoom}.png"

    def draw(path: Path, work_dir: Path) -> None:
        header = pictures.fits.Header.fromstring(calibration.wcs_header, sep="\n")
        outline = sky.field_outline(header, image.width, image.height)
        if zoom == 0:
            sky.write_sky_plot_whole_sky(outline, calibration.ra, calibration.dec, path)
        else:
            sky.write_sky_plot_zoom(zoom, outline, calibration.ra, calibration.dec, path, work_dir)

    # The sky plot needs no pixels, only the scratch directory the helper provides.
    path = with_prepared_image(
        image,
        target,
        lambda prepare, work_dir: build_once(target, lambda path: draw(path, work_dir)),
        "the sky plot",
    )
    return serve(path, "image/png", image)


def _image_picture(image_id: int, max_side: int | None, name: str) -> Response:
    image = visible_image(image_id)
    if image.file_hash is None or image.kind == "unsupported":
        abort(404, "This upload holds no displayable image.")
    store = storage()
    source = store.upload_path(image.file_hash)
    direct = DIRECT_MIMETYPES.get(image.kind)
    if max_side is None and direct is not None and pictures.sniff_is(source, image.kind):
        return serve(source, direct, image)  # JPEG, PNG and GIF are shown as uploaded
    fmt = "PNG" if image.kind == "xylist" else "JPEG"
    target = store.cache / f"image-{image.id}-{name}.{fmt.lower().replace('jpeg', 'jpg')}"
    max_pixels = settings().max_render_pixels
    # The full picture of a huge FITS/TIFF/star list is drawn within NOVA_MAX_RENDER_PIXELS.
    full_scale = pictures.render_scale(image.width, image.height, max_pixels)
    side = max_side or max(1, round(max(image.width, image.height) * full_scale))

    def build(prepare: Callable[[], PreparedInput], work_dir: Path) -> Path:
        return build_once(
            target,
            lambda path: pictures.write_display_image(prepare(), path, side, fmt, max_pixels),
        )

    path = with_prepared_image(image, target, build, "the picture")
    return serve(path, "image/png" if fmt == "PNG" else "image/jpeg", image)


@bp.route("/image/<int:image_id>", methods=ANY_METHOD)
def image_file(image_id: int) -> Response:
    """The upload as a picture: JPEG/PNG/GIF as uploaded, FITS and TIFF as JPEG, star lists
    drawn as dots (PNG)."""
    return _image_picture(image_id, None, "full")


@bp.route("/display_image/<int:image_id>", methods=ANY_METHOD)
def display_image(image_id: int) -> Response:
    return _image_picture(image_id, pictures.DISPLAY_MAX, "display")


@bp.route("/thumbnail_of_image/<int:image_id>", methods=ANY_METHOD)
def thumbnail(image_id: int) -> Response:
    return _image_picture(image_id, pictures.THUMBNAIL_MAX, "thumbnail")
