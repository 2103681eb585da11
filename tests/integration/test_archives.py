"""Batch uploads: tar and zip archives yield one image per usable member, read safely.

Archives are built in memory from the sample photos (nothing is copied into the repository)
and uploaded through the API (the web form's quick check refuses what is not an image).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nova.db.models import Job, Submission
from nova.engine import archives
from nova.engine.input_formats import SUPPORTED_TEXT
from nova.extensions import db
from nova.services import intake
from tests.support.api import api_call, api_login
from tests.support.processes import run_worker
from tests.support.settings import change_settings

MB = 1 << 20
STAR_LIST = b"# x y\n" + b"".join(f"{10 + i * 7} {20 + i * 5}\n".encode() for i in range(30))
PROSE = b"Photos from the star party.\nThe second one is M42, the first the Big Dipper.\n"


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def tar_bytes(entries: list[tuple[tarfile.TarInfo | str, bytes]], compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}", format=tarfile.GNU_FORMAT) as tar:
        for entry, data in entries:
            info = entry if isinstance(entry, tarfile.TarInfo) else tarfile.TarInfo(entry)
            if info.isreg():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, data in entries:
            archive.writestr(entry, data)
    return buffer.getvalue()


def pack(form: str, files: list[tuple[str, bytes]]) -> bytes:
    """tar, tar.gz, tar.bz2, zip, zip.gz or zip.bz2 of ``files``."""
    container, _, compression = form.partition(".")
    if container == "tar":
        return tar_bytes(list(files), compression)
    data = zip_bytes(list(files))
    return {"": data, "gz": gzip.compress(data), "bz2": bz2.compress(data)}[compression]


def special(name: str, kind: bytes, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for field, value in fields.items():
        setattr(info, field, value)
    return info


def zip_special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: external_attr carries the file type and mode
    info.external_attr = mode << 16
    return info


@pytest.fixture
def upload(client: FlaskClient, make_user: Callable[[str], tuple[int, str]]) -> Callable[..., int]:
    """Upload bytes through /api/upload as a logged-in client; return the submission id."""
    _, key = make_user("ann@example.org")
    session = api_login(client, key)

    def send(data: bytes, filename: str, **arguments: object) -> int:
        form = {
            "request-json": json.dumps({"session": session, **arguments}),
            "file": (io.BytesIO(data), filename),
        }
        answer = json.loads(client.post("/api/upload", data=form).data)
        assert answer["status"] == "success", answer
        return int(answer["subid"])

    return send


def submission(submission_id: int) -> Submission:
    row = db.session.get(Submission, submission_id)
    assert row is not None
    db.session.refresh(row)
    return row


def assert_failed(submission_id: int, message: str) -> None:
    """Failed as a whole: the reason on the submission and on its one failed job."""
    row = submission(submission_id)
    assert row.error_message == message
    assert row.processing_finished is not None
    [image] = row.user_images
    [job] = image.jobs
    assert job.status == "failure" and job.failure_reason == message


def stored(app: Flask) -> set[str]:
    uploads = Path(app.config["DATA_DIR"]) / "uploads"
    return {path.name for path in uploads.rglob("*") if path.is_file()}


# -- solving -----------------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.parametrize("form", ["tar.gz", "zip"])
def test_each_photo_in_an_archive_is_solved(
    client: FlaskClient, upload: Callable[..., int], apod: Path, form: str
) -> None:
    photos = {name: (apod / name).read_bytes() for name in ("apod2.jpg", "apod4.jpg")}
    data = pack(
        form,
        [
            ("night/apod2.jpg", photos["apod2.jpg"]),
            ("night/README.txt", PROSE),
            ("night/more/apod4.jpg", photos["apod4.jpg"]),
        ],
    )
    # One hint for both: apod2 is about 4.5 degrees wide, apod4 about 33.
    subid = upload(data, f"night.{form}", scale_units="degwidth", scale_lower=3, scale_upper=40)
    run_worker()
    row = submission(subid)
    assert row.error_message is None and row.processing_finished is not None
    assert row.original_filename == f"night.{form}" and row.upload_hash == sha1(data)
    images = sorted(row.user_images, key=lambda image: image.original_filename)
    assert [image.original_filename for image in images] == ["apod2.jpg", "apod4.jpg"]
    assert [image.file_hash for image in images] == [
        sha1(photos[i.original_filename]) for i in images
    ]
    centres = {"apod2.jpg": (84.577, -2.756), "apod4.jpg": (187.185, 56.713)}
    for image in images:
        [job] = image.jobs
        assert job.status == "success", job.failure_reason
        ra, dec = centres[image.original_filename]
        assert abs(job.calibration.ra - ra) < 0.05 and abs(job.calibration.dec - dec) < 0.05
    status = api_call(client, f"submissions/{subid}", method="GET")
    assert sorted(status["jobs"]) == sorted(image.jobs[0].id for image in images)
    assert len(status["job_calibrations"]) == 2


# -- recognising archives and their members ----------------------------------------------------


@pytest.mark.parametrize("form", ["tar", "tar.gz", "tar.bz2", "zip", "zip.gz", "zip.bz2"])
def test_every_archive_form_yields_one_image_per_usable_member(
    app: Flask, upload: Callable[..., int], apod: Path, form: str
) -> None:
    photo, xyls = (apod / "apod4.jpg").read_bytes(), (apod / "apod2.xyls").read_bytes()
    members = [
        ("a/apod4.jpg", photo),
        ("a/notes.txt", PROSE),
        ("a/b/stars.xyls", xyls),
        ("list.txt", STAR_LIST),
        ("packed.fits.gz", gzip.compress((apod / "apod5.xyls").read_bytes())),
    ]
    data = pack(form, members)
    assert archives.detect(_write(app, data)) == form
    subid = upload(data, "whatever.bin")
    job_ids = intake.process_submission(subid)
    assert len(job_ids) == 4
    images = submission(subid).user_images
    assert [(i.original_filename, i.kind) for i in images] == [
        ("apod4.jpg", "jpeg"),
        ("stars.xyls", "xylist"),
        ("list.txt", "xylist"),
        ("packed.fits.gz", "xylist"),
    ]
    assert [i.jobs[0].id for i in images] == job_ids
    assert all(i.jobs[0].status == "queued" for i in images)
    assert stored(app) == {sha1(data)} | {sha1(d) for n, d in members if n != "a/notes.txt"}
    assert not any((Path(app.config["DATA_DIR"]) / "tmp").iterdir())  # work dirs are gone
    assert intake.process_submission(subid) == []  # a second delivery does nothing


def _write(app: Flask, data: bytes) -> Path:
    path = Path(app.config["DATA_DIR"]) / f"probe-{uuid.uuid4().hex}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_single_files_are_not_archives(app: Flask, apod: Path) -> None:
    for data in (
        (apod / "apod4.jpg").read_bytes(),
        gzip.compress((apod / "apod4.jpg").read_bytes()),
        bz2.compress((apod / "apod2.xyls").read_bytes()),
        STAR_LIST,
        gzip.compress(STAR_LIST),
        b"%PDF-1.7 not an archive",
        b"\0" * 10240,  # an empty tar is no archive of anything
        b"\x1f\x8b garbage that is not gzip",
    ):
        assert archives.detect(_write(app, data)) is None


def test_a_gzipped_single_photo_is_still_one_image(upload: Callable[..., int], apod: Path) -> None:
    subid = upload(gzip.compress((apod / "apod4.jpg").read_bytes()), "apod4.jpg.gz")
    assert len(intake.process_submission(subid)) == 1
    [image] = submission(subid).user_images
    assert (image.original_filename, image.kind) == ("apod4.jpg.gz", "jpeg")


# -- hostile members -----------------------------------------------------------------------------


def test_unsafe_tar_members_are_refused_and_nothing_is_written_outside(
    app: Flask, upload: Callable[..., int], apod: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(STAR_LIST)  # usable if a link to it were followed
    escape = f"escape-{uuid.uuid4().hex}.txt"
    photo = (apod / "apod4.jpg").read_bytes()
    unsafe_data = STAR_LIST + b"# unsafe\n"  # would be a usable star list if extracted
    data = tar_bytes(
        [
            ("../../../" + escape, unsafe_data),
            (str(outside / "absolute.txt"), unsafe_data),
            ("..\\..\\..\\" + escape, unsafe_data),
            (special("sym.txt", tarfile.SYMTYPE, linkname=str(secret)), b""),
            (special("hard.txt", tarfile.LNKTYPE, linkname=str(secret)), b""),
            (special("null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
            (special("disk", tarfile.BLKTYPE, devmajor=8, devminor=0), b""),
            (special("pipe", tarfile.FIFOTYPE), b""),
            (special("dir/", tarfile.DIRTYPE), b""),
            ("dir/ok/apod4.jpg", photo),
        ],
        "gz",
    )
    subid = upload(data, "mixed.tar.gz")
    assert len(intake.process_submission(subid)) == 1
    row = submission(subid)
    assert row.error_message is None  # refused members are reported only if nothing is usable
    assert [i.original_filename for i in row.user_images] == ["apod4.jpg"]
    assert stored(app) == {sha1(data), sha1(photo)}  # no refused member reached the store
    assert not (outside / "absolute.txt").exists()
    for root in (tmp_path, Path("/"), Path.cwd().parent, Path(app.config["DATA_DIR"]).parent):
        assert not (root / escape).exists()
    assert not list(tmp_path.rglob("escape-*"))
    assert not any((Path(app.config["DATA_DIR"]) / "tmp").iterdir())


def test_an_archive_of_only_unsafe_members_fails_with_every_reason(
    upload: Callable[..., int], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(STAR_LIST)
    data = tar_bytes(
        [
            ("../up.txt", STAR_LIST),
            ("/etc/absolute.txt", STAR_LIST),
            (special("sym.txt", tarfile.SYMTYPE, linkname=str(secret)), b""),
            (special("hard.txt", tarfile.LNKTYPE, linkname=str(secret)), b""),
            (special("null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
            (special("pipe", tarfile.FIFOTYPE), b""),
            ("notes.txt", PROSE),
        ]
    )
    subid = upload(data, "bad.tar")
    run_worker()
    assert_failed(
        subid,
        "The archive holds no image or star list that can be solved ("
        "../up.txt: refused: a path with '..'; "
        "/etc/absolute.txt: refused: an absolute path; "
        "sym.txt: refused: a symbolic link; "
        "hard.txt: refused: a hard link; "
        "null: refused: a device file; "
        "pipe: refused: a FIFO; "
        "notes.txt: This file's type is not supported). " + SUPPORTED_TEXT,
    )


def test_unsafe_zip_members_are_refused(app: Flask, upload: Callable[..., int], apod: Path) -> None:
    photo = (apod / "apod4.jpg").read_bytes()
    data = zip_bytes(
        [
            ("../up.txt", STAR_LIST),
            ("/absolute.txt", STAR_LIST),
            ("..\\windows.txt", STAR_LIST),
            ("C:\\drive.txt", STAR_LIST),
            (zip_special("link.txt", stat.S_IFLNK | 0o777), b"/etc/passwd"),
            (zip_special("pipe", stat.S_IFIFO | 0o644), STAR_LIST),
            (zip_special("ok.jpg", stat.S_IFREG | 0o644), photo),
        ]
    )
    subid = upload(data, "mixed.zip")
    assert len(intake.process_submission(subid)) == 1
    assert [i.original_filename for i in submission(subid).user_images] == ["ok.jpg"]
    assert stored(app) == {sha1(data), sha1(photo)}
    # The same without the photo: every reason is listed.
    data = zip_bytes(
        [
            ("../up.txt", STAR_LIST),
            ("C:\\drive.txt", STAR_LIST),
            (zip_special("link.txt", stat.S_IFLNK | 0o777), b"/etc/passwd"),
        ]
    )
    subid = upload(data, "bad.zip")
    assert intake.process_submission(subid) == []
    assert submission(subid).error_message.startswith(
        "The archive holds no image or star list that can be solved (../up.txt: refused: a path "
        "with '..'; C:\\drive.txt: refused: an absolute path; link.txt: refused: a symbolic link)."
    )


def test_a_member_larger_than_an_upload_is_skipped(
    app: Flask, upload: Callable[..., int], apod: Path
) -> None:
    change_settings(app, MAX_CONTENT_LENGTH=MB)
    noise = np.random.default_rng(1).integers(0, 4, size=MB + 1000, dtype=np.uint8).tobytes()
    data = pack("tar.bz2", [("huge.fits", noise), ("apod4.jpg", (apod / "apod4.jpg").read_bytes())])
    subid = upload(data, "two.tar.bz2")
    assert len(intake.process_submission(subid)) == 1
    data = pack("zip", [("huge.fits", noise)])
    subid = upload(data, "one.zip")
    assert intake.process_submission(subid) == []
    assert "huge.fits: skipped: larger than 1 MB" in submission(subid).error_message


# -- limits --------------------------------------------------------------------------------------

PHOTOS = ("apod1.jpg", "apod2.jpg", "apod3.jpg")  # 443 kB together
QUARTER_ENTROPY = np.random.default_rng(2).integers(0, 4, size=2 * MB, dtype=np.uint8).tobytes()


def _bomb_cases() -> list[tuple[str, dict[str, str], Callable[[Path], bytes], str]]:
    zeros = b"\0" * (5 * MB)
    many = [(f"star{i}.txt", STAR_LIST) for i in range(4)]
    ratio = (
        "expands more than 200 times (NOVA_MAX_COMPRESSION_RATIO); compression bombs are refused."
    )
    return [
        (
            "members-tar",
            {"NOVA_MAX_ARCHIVE_MEMBERS": "3"},
            lambda apod: tar_bytes([(special("d/", tarfile.DIRTYPE), b"")] + many, "gz"),
            "The archive has more than 3 members (NOVA_MAX_ARCHIVE_MEMBERS).",
        ),
        (
            "members-zip",
            {"NOVA_MAX_ARCHIVE_MEMBERS": "3"},
            lambda apod: zip_bytes(list(many)),
            "The archive has more than 3 members (NOVA_MAX_ARCHIVE_MEMBERS).",
        ),
        (
            "bytes-tar",
            {"NOVA_MAX_ARCHIVE_BYTES": "300000"},
            lambda apod: tar_bytes([(n, (apod / n).read_bytes()) for n in PHOTOS]),
            "The archive unpacks to more than 300,000 bytes (NOVA_MAX_ARCHIVE_BYTES).",
        ),
        (
            "bytes-tar.gz",
            {"NOVA_MAX_ARCHIVE_BYTES": "300000"},
            lambda apod: tar_bytes([(n, (apod / n).read_bytes()) for n in PHOTOS], "gz"),
            "The archive unpacks to more than 300,000 bytes (NOVA_MAX_ARCHIVE_BYTES).",
        ),
        (
            "bytes-zip",
            {"NOVA_MAX_ARCHIVE_BYTES": "300000"},
            lambda apod: zip_bytes([(n, (apod / n).read_bytes()) for n in PHOTOS]),
            "The archive unpacks to more than 300,000 bytes (NOVA_MAX_ARCHIVE_BYTES).",
        ),
        (
            "ratio-zip",
            {},
            lambda apod: zip_bytes([("zeros.fits", zeros)]),
            f"The member zeros.fits {ratio}",
        ),
        (
            "ratio-tar.gz",
            {},
            lambda apod: tar_bytes([("zeros.fits", zeros)], "gz"),
            f"The archive {ratio}",
        ),
        (
            "ratio-tar.bz2",
            {},
            lambda apod: tar_bytes([("zeros.fits", zeros)], "bz2"),
            f"The archive {ratio}",
        ),
        (
            "ratio-member.gz",
            {},
            lambda apod: tar_bytes([("zeros.fits.gz", gzip.compress(zeros))]),
            f"The member zeros.fits.gz {ratio}",
        ),
        (
            "ratio-setting",
            {"NOVA_MAX_COMPRESSION_RATIO": "2"},
            lambda apod: zip_bytes([("quarter.fits", QUARTER_ENTROPY)]),
            "The member quarter.fits expands more than 2 times (NOVA_MAX_COMPRESSION_RATIO); "
            "compression bombs are refused.",
        ),
    ]


BOMBS = _bomb_cases()


@pytest.mark.parametrize(("case", "env", "build", "message"), BOMBS, ids=[c[0] for c in BOMBS])
def test_limits_fail_the_submission_with_the_setting_named(
    app: Flask,
    upload: Callable[..., int],
    apod: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    env: dict[str, str],
    build: Callable[[Path], bytes],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    subid = upload(build(apod), f"{case}.bin")
    run_worker()
    assert_failed(subid, message)
    assert db.session.scalars(select(Job).where(Job.status == "queued")).all() == []


def test_the_default_limits(app: Flask) -> None:
    assert app.config["MAX_ARCHIVE_MEMBERS"] == 200
    assert app.config["MAX_ARCHIVE_BYTES"] == 4 * app.config["MAX_CONTENT_LENGTH"]
    assert app.config["MAX_COMPRESSION_RATIO"] == 200
    assert app.config["URL_ALLOW_PRIVATE"] is False


# -- corrupt archives ----------------------------------------------------------------------------


def test_corrupt_archives_fail_with_a_reason(upload: Callable[..., int], apod: Path) -> None:
    photo = (apod / "apod4.jpg").read_bytes()
    tar_gz = tar_bytes([("a.jpg", photo), ("b.jpg", photo)], "gz")
    plain_tar = tar_bytes([("a.jpg", photo)])
    good_zip = zip_bytes([("a.jpg", photo)])
    crc_zip = bytearray(zip_bytes([(zip_special("a.jpg", stat.S_IFREG | 0o644), photo)]))
    crc_zip[200] ^= 0xFF  # inside a.jpg's data, stored uncompressed
    cases = {
        upload(tar_gz[: len(tar_gz) // 2], "cut.tar.gz"): "The archive's gzip data is corrupt: "
        "Compressed file ended before the end-of-stream marker was reached",
        upload(plain_tar[: 512 + 1000], "cut.tar"): "The tar archive is corrupt: unexpected end "
        "of data",
        upload(
            bytes(crc_zip), "crc.zip"
        ): "The zip archive is corrupt: Bad CRC-32 for file 'a.jpg'",
        upload(b"PK\x03\x04" + b"\0" * 100, "stub.zip"): "The zip archive is corrupt: its central "
        "directory is missing.",
        upload(good_zip[:-30], "cut.zip"): "The zip archive is corrupt: its central directory is "
        "missing.",
        upload(tar_bytes([(special("only/", tarfile.DIRTYPE), b"")]), "empty.tar"): "The archive "
        "holds no files.",
    }
    run_worker()
    for subid, message in cases.items():
        assert_failed(subid, message)
