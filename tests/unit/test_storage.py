"""Storage: content addressing and atomic publishing of job directories."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from nova.infra.storage import Storage, UploadTooLarge


def test_uploads_are_content_addressed(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    sha1, size = store.store_stream(io.BytesIO(b"stars"))
    assert sha1 == hashlib.sha1(b"stars").hexdigest() and size == 5
    assert store.upload_path(sha1) == tmp_path / "uploads" / sha1[:3] / sha1
    assert store.upload_path(sha1).read_bytes() == b"stars"
    assert store.store_stream(io.BytesIO(b"stars"))[0] == sha1
    assert list(store.tmp.iterdir()) == []  # no temporary file left behind
    with pytest.raises(UploadTooLarge):
        store.store_stream(io.BytesIO(b"x" * 100), max_bytes=10)
    assert list(store.tmp.iterdir()) == []


def test_job_directories_appear_whole_and_replace_earlier_runs(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    assert store.job_dir(1234) == tmp_path / "jobs" / "0000" / "00001234"
    first = store.make_work_dir("job-")
    (first / "log").write_text("first run")
    assert store.job_file(1234, "log") is None  # not visible before publishing
    store.publish_job_dir(first, 1234)
    assert store.job_file(1234, "log").read_text() == "first run"  # type: ignore[union-attr]
    second = store.make_work_dir("job-")
    (second / "log").write_text("second run")
    store.publish_job_dir(second, 1234)
    assert store.job_file(1234, "log").read_text() == "second run"  # type: ignore[union-attr]
    assert not first.exists() and not second.exists()
    assert list(store.tmp.iterdir()) == []
