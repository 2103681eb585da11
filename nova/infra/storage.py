"""Files on disk: content-addressed uploads, one directory per job, atomic publishing.

Layout under the data directory::

    uploads/<sha1[:3]>/<sha1>     every uploaded or downloaded file, stored once
    jobs/<id8[:4]>/<id8>/         a job's products (id8 = job id, zero-padded to 8 digits)
    tmp/                          work in progress; same filesystem, so renames are atomic

A job works in ``tmp/`` and its directory is renamed into ``jobs/`` only when complete,
so a half-written job directory is never visible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class UploadTooLarge(ValueError):
    pass


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"
        self.jobs = root / "jobs"
        self.tmp = root / "tmp"
        self.cache = root / "cache"

    def ensure_dirs(self) -> None:
        for directory in (self.uploads, self.jobs, self.tmp, self.cache):
            directory.mkdir(parents=True, exist_ok=True)

    # -- uploads ---------------------------------------------------------------------------
    def upload_path(self, sha1: str) -> Path:
        return self.uploads / sha1[:3] / sha1

    def store_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        """Copy ``stream`` into the store; return (sha1, size). Identical content is kept once."""
        self.ensure_dirs()
        digest = hashlib.sha1()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as sink:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise UploadTooLarge(f"larger than {max_bytes // (1 << 20)} MB")
                    digest.update(chunk)
                    sink.write(chunk)
            sha1 = digest.hexdigest()
            target = self.upload_path(sha1)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
            tmp_name = ""
            return sha1, size
        finally:
            if tmp_name:
                Path(tmp_name).unlink(missing_ok=True)

    def store_file(self, path: Path) -> str:
        """Move a file that is already on this filesystem into the store; return its sha1."""
        digest = hashlib.sha1()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        sha1 = digest.hexdigest()
        target = self.upload_path(sha1)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return sha1

    # -- jobs ------------------------------------------------------------------------------
    def job_dir(self, job_id: int) -> Path:
        id8 = f"{job_id:08d}"
        return self.jobs / id8[:4] / id8

    def job_file(self, job_id: int, name: str) -> Path | None:
        """A published product of a job, or None if the job has none by that name."""
        path = self.job_dir(job_id) / name
        return path if path.is_file() else None

    def make_work_dir(self, prefix: str) -> Path:
        self.ensure_dirs()
        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=prefix))

    def publish_job_dir(self, work_dir: Path, job_id: int) -> Path:
        """Move a finished work directory to the job's place in one rename.

        A job that runs again (after a retry) replaces its earlier directory: the old one is
        first renamed aside, so readers see either the old or the new complete directory.
        """
        target = self.job_dir(job_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        work_dir.chmod(0o755)  # mkdtemp makes 0700 directories
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"old-job-{job_id}-"))
            os.replace(target, old / "dir")
        os.replace(work_dir, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def discard(self, work_dir: Path) -> None:
        shutil.rmtree(work_dir, ignore_errors=True)
