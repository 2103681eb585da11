"""Every nova client against a live server started with ``nova up``.

astroquery and astrometry-net-client run for real (PyPI). The others -- N.I.N.A., KStars/
StellarSolver, AstroImageJ, nova's client.py (today's, and the cookie-less copy CCDciel
bundles) and AstroBin -- are replayed over HTTP request by request as their source sends
them: the same methods, paths, headers and bodies, a fresh connection without cookies
where the client opens one per request, a cookie jar where it keeps one. Each uploads
privately when the client does, and the private image stays private to everyone else.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
import requests
from astropy.io import fits
from PIL import Image

from tests.support.client_wire import (
    astroimagej_body,
    client_py_body,
    dotnet_body,
    dotnet_url_encode,
    java_url_encode,
    qt_body,
)
from tests.support.processes import wait_for
from tests.support.stack import live_stack

pytestmark = pytest.mark.engine
HINTS = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a whole stack: redis, gunicorn and a worker."""
    with live_stack(tmp_path_factory.mktemp("live")) as stack:
        users = _Users(stack)
        _STACKS[stack.base] = users
        yield stack.base, users.nova_user("observer@example.org")
        del _STACKS[stack.base]


def apod4_stars(apod: Path) -> tuple[list[float], list[float]]:
    with fits.open(apod / "apod4.xyls") as hdus:
        return list(map(float, hdus[1].data["X"])), list(map(float, hdus[1].data["Y"]))


APOD4_SIZE = (719, 507)
# apod4 is about 170"/px; StellarSolver and AstroImageJ send +-20 % in arcsec per pixel.
APOD4_ARCSEC_PER_PIXEL = (136.0, 204.0)
SOLVE_WAIT = 180  # seconds: a client's own patience, far above a hinted solve


def poll(answer: Callable[[], Any], timeout: float = SOLVE_WAIT) -> Any:
    """Ask again, as clients do, until ``answer`` returns something truthy; return it."""
    found: list[Any] = []

    def ready() -> bool:
        value = answer()
        if value:
            found.append(value)
        return bool(value)

    assert wait_for(ready, timeout, interval=0.3), "the client would still be waiting"
    return found[0]


def nova_json(response: requests.Response) -> dict[str, Any]:
    """What every client expects of an API answer: HTTP 200, text/plain, a JSON object."""
    assert response.status_code == 200, (response.url, response.status_code, response.text)
    assert response.headers["Content-Type"] == "text/plain", response.url
    payload = json.loads(response.text)
    assert isinstance(payload, dict)
    return payload


class _Users:
    """Accounts on a live stack, made with the CLI as an operator does."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def nova_user(self, email: str) -> str:
        created = self.stack.nova("create-user", email)
        match = re.search(r"API key: ([a-z0-9]+)", created)
        assert match, created
        return match.group(1)


_STACKS: dict[str, _Users] = {}


def assert_private_to_others(base: str, other_key: str, job_id: int, image_id: int) -> None:
    """Another user and an anonymous caller get 404 for the private image's pages, pictures,
    files other than the WCS, user tags, and find it in no list or search."""
    other = requests.Session()
    session = nova_json(
        other.post(base + "/api/login", data={"request-json": json.dumps({"apikey": other_key})})
    )["session"]
    for caller in (other, requests):
        for path in (
            f"/user_images/{image_id}",
            f"/image/{image_id}",
            f"/display_image/{image_id}",
            f"/thumbnail_of_image/{image_id}",
            f"/annotated_display/{job_id}",
            f"/new_fits_file/{job_id}",
            f"/corr_file/{job_id}",
            f"/axy_file/{job_id}",
            f"/joblog/{job_id}",
            f"/api/jobs/{job_id}/tags",
        ):
            assert caller.get(base + path).status_code == 404, path
        for path in ("/explore", "/search?q=Ursa", "/search?ra=187.2&dec=56.7&radius=10"):
            assert f'/user_images/{image_id}"' not in caller.get(base + path).text, path
        tagged = nova_json(caller.get(base + "/api/jobs_by_tag?query=Ursa"))["job_ids"]
        assert job_id not in tagged
    mine = nova_json(
        other.post(base + "/api/myjobs/", data={"request-json": json.dumps({"session": session})})
    )
    assert job_id not in mine["jobs"]


def apod4_fits(apod: Path) -> bytes:
    """apod4 as N.I.N.A. and StellarSolver hand it over: a 16-bit FITS image."""
    grey = np.asarray(Image.open(apod / "apod4.jpg").convert("L"), dtype=np.uint16) * 256
    buffer = io.BytesIO()
    fits.PrimaryHDU(grey[::-1]).writeto(buffer)  # FITS rows run bottom to top
    return buffer.getvalue()


def test_nina_solves_a_private_upload_polling_without_a_session(
    live_server: tuple[str, str], apod: Path
) -> None:
    """N.I.N.A. (NINA.Platesolving/Solvers/AstrometryPlateSolver.cs, NINA.Core/Utility/Http):
    a new HttpClient per request, so no cookie; login form-encoded by HttpUtility.UrlEncode;
    the FITS upload from MultipartFormDataContent, always "publicly_visible": "n" and no
    hints; then GET submissions, jobs and calibration/ with the bare id."""
    base, key = live_server
    agent = {"User-Agent": "N.I.N.A. - Nighttime Imaging 'N' Astronomy/3.1"}
    login = requests.post(
        base + "/api/login/",
        data="request-json=" + dotnet_url_encode('{"apikey":"' + key + '"}'),
        headers={**agent, "Content-Type": "application/x-www-form-urlencoded"},
    )
    session = nova_json(login)["session"]
    request_json = (
        '{"publicly_visible": "n", "allow_modifications": "d", "session": "'
        + session
        + '", "allow_commercial_use": "d"}'
    )
    body, content_type = dotnet_body(request_json, "kx3fa0qe.2dn", apod4_fits(apod))
    upload = nova_json(
        requests.post(
            base + "/api/upload", data=body, headers={**agent, "Content-Type": content_type}
        )
    )
    assert upload["status"] == "success"
    subid = str(upload["subid"])  # GetValue("subid").ToString()

    def job_id() -> str:
        jobs = nova_json(requests.get(f"{base}/api/submissions/{subid}", headers=agent))["jobs"]
        # (JArray)GetValue("jobs"); jobids.First.ToString() is "" for a JSON null.
        return "" if not jobs or jobs[0] is None else str(jobs[0])

    job = poll(job_id)

    def ended() -> str:
        status = nova_json(requests.get(f"{base}/api/jobs/{job}", headers=agent))["status"]
        return status if status in ("success", "failure") else ""

    assert poll(ended) == "success"
    calibration = nova_json(requests.get(f"{base}/api/jobs/{job}/calibration/", headers=agent))
    # job.ToObject<Calibration>(): six doubles.
    assert {k: float(calibration[k]) for k in ("parity", "orientation", "pixscale", "radius")}
    assert abs(float(calibration["dec"]) - 56.71) < 0.1
    assert abs(float(calibration["ra"]) - 187.19) < 0.2
    info = nova_json(requests.get(f"{base}/api/jobs/{job}/info/", headers=agent))
    assert info["status"] == "success" and "calibration" in info
    image_id = nova_json(requests.get(f"{base}/api/submissions/{subid}"))["user_images"][0]
    assert_private_to_others(
        base, _STACKS[base].nova_user("nina-other@example.org"), int(job), image_id
    )


def test_kstars_stellarsolver_solves_a_private_star_list(
    live_server: tuple[str, str], apod: Path
) -> None:
    """StellarSolver's online solver (stellarsolver/onlinesolver.cpp) on one
    QNetworkAccessManager, which keeps cookies: login with raw unencoded request-json,
    a QHttpMultiPart upload of its X/Y/MAG_AUTO table (named like the image it came
    from), compact JSON in QJsonObject's sorted key order, then GETs of submissions, jobs,
    calibration, the job log and the WCS."""
    base, key = live_server
    qt = requests.Session()
    login = qt.post(
        base + "/api/login",
        data=f'request-json={{"apikey":"{key}"}}'.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    session = nova_json(login)["session"]
    xs, ys = apod4_stars(apod)
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="X", format="E", array=np.array(xs)),
            fits.Column(name="Y", format="E", array=np.array(ys)),
            fits.Column(name="MAG_AUTO", format="E", array=np.linspace(-12, -4, len(xs))),
        ]
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    low, high = APOD4_ARCSEC_PER_PIXEL
    request_json = json.dumps(
        {
            "allow_commercial_use": "n",
            "allow_modifications": "n",
            "crpix_center": True,
            "image_height": APOD4_SIZE[1],
            "image_width": APOD4_SIZE[0],
            "parity": 2,
            "publicly_visible": "n",
            "scale_lower": low,
            "scale_type": "ul",
            "scale_units": "arcsecperpix",
            "scale_upper": high,
            "session": session,
        },
        separators=(",", ":"),
    )
    body, content_type = qt_body(
        request_json, "/home/observer/.local/share/kstars/solver_W1kxPa.fits", buffer.getvalue()
    )
    upload = nova_json(
        qt.post(base + "/api/upload", data=body, headers={"Content-Type": content_type})
    )
    assert upload["status"] == "success" and isinstance(upload["subid"], int)

    def job_id() -> int:
        status = nova_json(qt.get(f"{base}/api/submissions/{upload['subid']}"))
        if status["processing_finished"] in ("None", ""):
            return 0
        jobs = status["jobs"]
        return int(jobs[0]) if jobs and jobs[0] else 0  # jobs.first().toInt()

    job = poll(job_id)
    assert job < 2**31  # QVariant::toInt

    def ended() -> str:
        status = nova_json(qt.get(f"{base}/api/jobs/{job}"))["status"]
        return "" if status in ("solving", "processing") else status

    assert poll(ended) == "success"
    calibration = nova_json(qt.get(f"{base}/api/jobs/{job}/calibration"))
    for needed in (
        "width_arcsec",
        "height_arcsec",
        "parity",
        "orientation",
        "ra",
        "dec",
        "pixscale",
    ):
        assert isinstance(calibration[needed], float), needed
    assert int(calibration["parity"]) in (1, -1)
    assert calibration["width_arcsec"] / 3600 == pytest.approx(34.0, abs=1.0)
    log = qt.get(f"{base}/joblog/{job}")  # the cookie from the login: the owner's log
    assert log.status_code == 200 and "solved with" in log.text
    header = fits.Header.fromstring(qt.get(f"{base}/wcs_file/{job}").content)
    assert header["IMAGEW"] == APOD4_SIZE[0]
    assert requests.get(f"{base}/joblog/{job}").status_code == 404  # without the cookie


def test_astroimagej_solves_a_private_star_list_polling_without_a_session(
    live_server: tuple[str, str], apod: Path
) -> None:
    """AstroImageJ (astroj/Astrometry.java): URLConnection per request, no cookies; login
    with URLEncoder; its own multipart with a "x \t y" list (y up, from ImageJ's
    top-left pixels) and "publicly_visible":"n"; submissions and jobs polled with the
    bare id; the WCS read as one line of 80-character cards; annotations parsed by
    splitting the JSON text."""
    base, key = live_server
    login = requests.post(
        base + "/api/login",  # new URL(apiURL + "login"), apiURL ending in /api/
        data="request-json=" + java_url_encode(json.dumps({"apikey": key}, separators=(",", ":"))),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    session = nova_json(login)["session"]
    width, height = APOD4_SIZE
    xs, ys = apod4_stars(apod)
    # ImageJ pixels are 0-based from the top left; AstroImageJ sends (x, height - y).
    lines = "".join(f"{x - 1!r} \t {height - (y - 1)!r}\r\n" for x, y in zip(xs, ys, strict=True))
    low, high = APOD4_ARCSEC_PER_PIXEL
    setup = (
        '{"allow_commercial_use":"d","allow_modifications":"d","publicly_visible":"n",'
        f'"image_width":{width},"image_height":{height},"scale_units":"arcsecperpix",'
        f'"scale_type":"ul","scale_lower":{low!r},"scale_upper":{high!r},'
        f'"downsample_factor":1,"crpix_center":true,"tweak_order":2,"session":"{session}"}}'
    )
    body, content_type = astroimagej_body(setup, lines + "\r\n")
    upload = nova_json(
        requests.post(base + "/api/upload", data=body, headers={"Content-Type": content_type})
    )
    assert upload["status"] == "success"
    subid = upload["subid"]

    def job_list() -> str:
        jobs = json.dumps(nova_json(requests.get(f"{base}/api/submissions/{subid}"))["jobs"])
        text = jobs.replace(" ", "")  # json-simple's JSONArray.toString()
        return "" if text in ("[]", "[null]") else text

    job = poll(job_list).replace("[", "").replace("]", "")

    def ended() -> str:
        status = nova_json(requests.get(f"{base}/api/jobs/{job}"))["status"]
        return status if status in ("success", "failure", "error") else ""

    assert poll(ended) == "success"
    first_line = requests.get(f"{base}/wcs_file/{job}").text.split("\n")[0].split("\r")[0]
    cards = [first_line[i : i + 80] for i in range(0, len(first_line) // 80 * 80, 80)]
    assert any(card.startswith("CTYPE1  = 'RA---TAN") for card in cards)
    assert any(card.startswith("END") for card in cards)
    text = requests.get(f"{base}/api/jobs/{job}/annotations").text.split("\n")[0]
    names = []
    for chunk in text.split(", {"):
        start_name, start_x, start_y = (chunk.find(k) for k in ("names", "pixelx", "pixely"))
        if -1 in (start_name, start_x, start_y):
            continue
        names.append(chunk[start_name + 10 : chunk.index('"', start_name + 10)])
        end_x = chunk.index(",", start_x + 9)
        float(chunk[start_x + 9 : end_x])
        end_y = chunk.find(",", start_y + 9)
        float(chunk[start_y + 9 : end_y if end_y != -1 else chunk.index("}", start_y + 9)])
    assert "Mizar" in names and len(names) > 20
    image_id = nova_json(requests.get(f"{base}/api/submissions/{subid}"))["user_images"][0]
    assert_private_to_others(
        base, _STACKS[base].nova_user("aij-other@example.org"), int(job), image_id
    )


def test_astroquery_solves_a_source_list_and_a_private_image(
    live_server: tuple[str, str], apod: Path
) -> None:
    """astroquery for real; its requests session keeps the login's cookie."""
    from astroquery.astrometry_net import AstrometryNet, conf

    base, key = live_server
    solver = AstrometryNet()
    solver.URL, solver.API_URL = base, base + "/api"
    with conf.set_temp("api_key", key):
        xs, ys = apod4_stars(apod)
        header = solver.solve_from_source_list(xs, ys, 719, 507, solve_timeout=120, **HINTS)
        assert header["CTYPE1"].startswith("RA---TAN")
        assert header["IMAGEW"] == 719
        image_header, subid = solver.solve_from_image(
            str(apod / "apod4.jpg"),
            force_image_upload=True,
            solve_timeout=120,
            publicly_visible="n",
            return_submission_id=True,
            **HINTS,
        )
        assert image_header["CTYPE2"].startswith("DEC--TAN")
        assert image_header["CRVAL2"] == pytest.approx(56.7, abs=5)
    status = nova_json(requests.get(f"{base}/api/submissions/{subid}"))
    assert_private_to_others(
        base, _STACKS[base].nova_user("aq-other@example.org"), status["jobs"][0],
        status["user_images"][0],
    )  # fmt: skip


def test_astrometry_net_client_solves_privately_without_cookies(
    live_server: tuple[str, str], apod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """astrometry-net-client for real: module-level requests calls, so no cookie ever. A
    private upload's status, info and WCS come by the id; its other files need a public
    upload."""
    from astrometry_net_client import Session, statusables, uploads
    from astrometry_net_client import session as session_module

    base, key = live_server
    # The package hard-codes nova's address; point its classes at ours (as its users do).
    monkeypatch.setattr(session_module.Session, "url", base + "/api/login")
    monkeypatch.setattr(uploads.FileUpload, "url", base + "/api/upload")
    monkeypatch.setattr(statusables.Submission, "url", base + "/api/submissions/{submission.id}")
    monkeypatch.setattr(statusables.Job, "url", base + "/api/jobs/{job.id}")
    monkeypatch.setattr(statusables.Job, "wcs_file_url", base + "/wcs_file/{job.id}")
    monkeypatch.setattr(statusables.Job, "corr_file_url", base + "/corr_file/{job.id}")
    session = Session(api_key=key)
    for visibility in ("n", "y"):
        settings = {**HINTS, "publicly_visible": visibility}
        upload = uploads.FileUpload(str(apod / "apod4.jpg"), session=session, settings=settings)
        submission = upload.submit()
        submission.until_done(start=1, end=4, timeout=120)
        job = submission.jobs[0]
        job.until_done(start=1, end=4, timeout=120)
        assert job.success()
        info = job.info()
        assert info["original_filename"] == "apod4.jpg"
        assert abs(info["calibration"]["dec"] - 56.713) < 0.05
        assert "Part of the constellation Ursa Major (UMa)" in info["machine_tags"]
        header = job.wcs_file()
        assert header["CTYPE1"] == "RA---TAN-SIP"
        if visibility == "n":
            with pytest.raises(requests.HTTPError):
                job.corr_file()  # holds star positions from the picture: the owner's only
        else:
            assert len(job.corr_file()[1].data) > 10


CLIENT_PY_UPLOAD_ARGS = {
    # client.py's _get_upload_args order: licence answers, visibility, then the hints.
    "allow_commercial_use": "d",
    "allow_modifications": "d",
    "publicly_visible": "n",  # --private
    "scale_units": "degwidth",
    "scale_lower": 25.0,
    "scale_upper": 40.0,
    "scale_type": "ul",
}


def client_py_session(base: str, key: str, http: Any) -> Callable[..., dict[str, Any]]:
    """client.py's send_request: every call a POST to <server>/api/<service> with
    request-json (urlencoded, or its own multipart for a file), the session added once
    logged in."""
    state: dict[str, str] = {}

    def send(service: str, args: dict[str, Any], file_args: tuple[str, bytes] | None = None):
        args = {**args, **({"session": state["session"]} if state else {})}
        text = json.dumps(args)
        if file_args is None:
            body = urlencode({"request-json": text})
            content_type = "application/x-www-form-urlencoded"
        else:
            body, content_type = client_py_body(text, *file_args)
        url = f"{base}/api/{service}"
        response = http.post(url, data=body, headers={"Content-Type": content_type})
        result = nova_json(response)
        assert result.get("status") != "error", result
        return result

    state["session"] = send("login", {"apikey": key})["session"]
    return send


def client_py_solve(base: str, send: Callable[..., dict[str, Any]], apod: Path) -> int:
    """client.py --upload apod4.jpg --private --wait: submissions/N until a job, jobs/N until
    success (its 5 s sleeps shortened)."""
    data = (apod / "apod4.jpg").read_bytes()
    subid = send("upload", CLIENT_PY_UPLOAD_ARGS, ("/home/ann/sky/apod4.jpg", data))["subid"]

    def job() -> int | None:
        return next((j for j in send(f"submissions/{subid}", {}).get("jobs", []) if j), None)

    job_id = poll(job)
    assert poll(lambda: send(f"jobs/{job_id}", {}).get("status") in ("success", "failure"))
    assert send(f"jobs/{job_id}", {})["status"] == "success"
    return job_id


def test_client_py_with_its_cookie_jar_fetches_every_private_file(
    live_server: tuple[str, str], apod: Path
) -> None:
    """Today's net/client/client.py: a cookie jar installed before login and Referer on the
    file downloads: --private --wcs --kmz --newfits --corr --annotate all work."""
    base, key = live_server
    jar = requests.Session()
    send = client_py_session(base, key, jar)
    job_id = client_py_solve(base, send, apod)
    server = base + "/api/"
    for path, kind in (
        (f"/wcs_file/{job_id}", "application/fits"),
        (f"/kml_file/{job_id}/", "application/vnd.google-earth.kmz"),
        (f"/new_fits_file/{job_id}/", "application/fits"),
        (f"/corr_file/{job_id}", "application/fits"),
    ):
        response = jar.get(base + path, headers={"Referer": server})
        assert response.status_code == 200, path
        assert response.headers["Content-Type"] == kind, path
    annotations = send(f"jobs/{job_id}/annotations", {})["annotations"]
    assert any(a["names"][0] == "Mizar" for a in annotations)
    for service in ("calibration", "tags", "machine_tags", "objects_in_field", "info"):
        send(f"jobs/{job_id}/{service}", {})  # job_status() after success
    assert job_id in send("myjobs/", {})["jobs"]


def test_client_py_without_cookies_gets_the_private_wcs(
    live_server: tuple[str, str], apod: Path
) -> None:
    """The client.py CCDciel bundles (scripts/client.py, run by astrometry-online.sh with
    --upload --wait --private --wcs): files fetched with a bare urlopen, no cookie, no
    Referer. The WCS comes by the job id; the pixels do not."""
    base, key = live_server
    send = client_py_session(base, key, requests)  # module-level: nothing kept between calls
    job_id = client_py_solve(base, send, apod)
    wcs = requests.get(base + f"/wcs_file/{job_id}")
    assert wcs.status_code == 200 and wcs.headers["Content-Type"] == "application/fits"
    assert fits.Header.fromstring(wcs.content)["CTYPE1"] == "RA---TAN-SIP"
    assert requests.get(base + f"/new_fits_file/{job_id}/").status_code == 404


def test_astrobin_solves_publicly_and_links_its_pictures(
    live_server: tuple[str, str], apod: Path
) -> None:
    """AstroBin (astrobin_apps_platesolving/backends/astrometry_net/solver.py): client.py's
    multipart from a temporary file, downsample_factor as a float, public uploads; reads
    jobs[0], job_calibrations[0][1], info and annotations/, and links the annotated
    picture and the zoom-1 sky plot for browsers."""
    base, key = live_server
    send = client_py_session(base, key, requests)
    args = {
        "allow_commercial_use": "n",
        "allow_modifications": "n",
        "publicly_visible": "y",
        "scale_units": "degwidth",
        "scale_type": "ul",
        "scale_lower": 25.0,
        "scale_upper": 40.0,
        "downsample_factor": 2.0,
        "use_sextractor": False,
    }
    data = (apod / "apod4.jpg").read_bytes()
    subid = send("upload", args, ("/tmp/tmpq8w1r2x0", data))["subid"]
    job_id = poll(lambda: (send(f"submissions/{subid}", {}).get("jobs") or [None])[0])
    calibration_id = poll(
        lambda: (send(f"submissions/{subid}", {}).get("job_calibrations") or [[None, None]])[0][1]
    )
    info = send(f"jobs/{job_id}/info", {})
    assert info["status"] == "success"
    assert send(f"jobs/{job_id}/annotations/", {})["annotations"]
    for path in (f"/annotated_full/{job_id}", f"/sky_plot/zoom1/{calibration_id}"):
        picture = requests.get(base + path)  # a browser, signed out
        assert picture.status_code == 200, path
        assert picture.headers["Content-Type"] in ("image/png", "image/jpeg"), path
