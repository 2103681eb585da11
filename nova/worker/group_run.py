"""A chained group's engine run: every frame's job.axy written with the chain's hints (from a
template of solve-field's output), one ``astrometry-engine`` for the group, and the stand-in
solve that takes over what the run found for each frame."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nova.engine import commands, fits_tables, job_files, process, solver
from nova.engine.input_formats import PreparedInput
from nova.engine.params import SolveParams

# The chained attempt searches the brightest this many sources only: with the right hints a
# frame solves within its first 10-20, and a frame the hints do not fit (clouds, another
# field) gives up in about half a second instead of searching for a minute.
CHAIN_DEPTH = 60


@dataclass
class GroupFrame:
    """A frame of a chained group: its scratch directory holds its job.axy and, after the
    engine ran, what the engine wrote."""

    position: int
    job_id: int
    scratch: Path
    prepared: PreparedInput | None  # the input, prepared in ``scratch``
    ready: bool  # job.axy written: the engine tries it


def chained_solve(
    scratch: GroupFrame | None, shared_seconds: float = 0.0
) -> Callable[..., solver.SolveOutcome]:
    """A stand-in for ``solver.solve``: take over what the group's engine run found for this
    frame (its scratch directory); when it found nothing, ``solver.solve`` with the frame's
    own parameters in what is left of its time limit."""

    def solve(
        params: SolveParams,
        prepared: PreparedInput,
        work_dir: Path,
        *,
        time_limit: float,
        deadline: float | None = None,
        **options: Any,  # the rest of solver.solve's options, passed on unchanged
    ) -> solver.SolveOutcome:
        # The frame's own limit, less what it spent in its group's common run: every frame of
        # a group gets its full time limit, however many of them need the ordinary solve.
        own_deadline = time.monotonic() + time_limit - shared_seconds
        deadline = own_deadline if deadline is None else min(deadline, own_deadline)
        if scratch is not None:
            for name in (
                job_files.AXY_NAME,
                job_files.WCS_NAME,
                job_files.CORR_NAME,
                job_files.RDLS_NAME,
            ):
                if (scratch.scratch / name).exists():
                    os.replace(scratch.scratch / name, work_dir / name)
            with (work_dir / job_files.LOG_NAME).open("a") as log_file:
                log_file.write((scratch.scratch / job_files.LOG_NAME).read_text(errors="replace"))
            if (work_dir / job_files.WCS_NAME).exists():
                return solver.SolveOutcome(True, None, table_rows(work_dir / job_files.AXY_NAME))
            with (work_dir / job_files.LOG_NAME).open("a") as log_file:
                log_file.write("\nno solution with the chain's hints; solving as an ordinary job\n")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return solver.SolveOutcome(
                False, f"Stopped after the time limit of {time_limit:g} s without a solution.", None
            )
        outcome = solver.solve(
            params, prepared, work_dir, time_limit=remaining, deadline=deadline, **options
        )
        if outcome.reason and outcome.reason.startswith("Stopped after the time limit"):
            # The limit is the frame's, not what the chained attempt left of it.
            outcome = replace(
                outcome,
                reason=f"Stopped after the time limit of {time_limit:g} s without a solution.",
            )
        return outcome

    return solve


# Output file cards of job.axy: solve-field writes them relative to the job's directory (the
# engine's working directory); a group run starts in their common parent instead.
OUTPUT_CARDS = ("ANWCS", "ANCORR", "ANRDLS", "ANMATCH", "ANSOLVED", "ANNEWFITS")
ENGINE_AXY_NAME = "chain.axy"
FITS_CARD = 80


def write_chained_axy(
    hints: SolveParams,
    prepared: PreparedInput,
    scratch: Path,
    deadline: float,
    template: AxyTemplate,
    fast: bool = True,
) -> bool:
    """job.axy with the chain's hints (as solve-field --just-augment writes it), and the
    engine's copy of it whose outputs point into ``scratch`` from its parent directory.
    False when no usable job.axy came out (the ordinary solve then tries and says why)."""
    log_path = scratch / job_files.LOG_NAME
    with log_path.open("a") as log_file:
        log_file.write(
            f"chained from the solved frame at RA {hints.center_ra:.5f}, Dec "
            f"{hints.center_dec:.5f}: scale {hints.scale_est:.4f} arcsec/px "
            f"+-{hints.scale_err:g}%, radius {hints.radius:.3f} deg, parity "
            f"{'positive' if hints.parity == 0 else 'negative'}, brightest {CHAIN_DEPTH} sources\n"
        )
    code = extract_with_template(hints, prepared, scratch, log_path, deadline, template, fast)
    axy = scratch / job_files.AXY_NAME
    if code != 0 or not axy.exists() or table_rows(axy) < solver.MIN_SOURCES_TO_SOLVE:
        return False
    data = bytearray(axy.read_bytes())
    for offset in range(0, len(data) - FITS_CARD + 1, FITS_CARD):
        keyword = data[offset : offset + 8].rstrip().decode("ascii")
        if keyword == "END":
            break
        if keyword not in OUTPUT_CARDS:
            continue
        # A string card: KEYWORD = 'value' / comment (solve-field's names hold no quotes).
        text = data[offset : offset + FITS_CARD].decode("ascii")
        name = text[10:].split("'")[1].strip()
        card = f"{keyword:<8}= '{scratch.name}/{name}'".ljust(FITS_CARD)
        if len(card) != FITS_CARD:
            return False  # a name too long for one card: leave it to the ordinary solve
        data[offset : offset + FITS_CARD] = card.encode("ascii")
    (scratch / ENGINE_AXY_NAME).write_bytes(bytes(data))
    return True


def run_engine(scratches: Sequence[Path], index_dirs: Sequence[Path], deadline: float) -> None:
    """One astrometry-engine for all the group's frames, searching the brightest CHAIN_DEPTH
    sources of each; every frame's log gets the run's output."""
    if not scratches:
        return
    parent = scratches[0].parent
    config = scratches[0] / "chain.cfg"
    cpulimit = int(max(1.0, deadline - time.monotonic())) + 1
    depths = " ".join(str(depth) for depth in range(10, CHAIN_DEPTH + 1, 10))
    config.write_text(commands.engine_config(index_dirs, cpulimit) + f"depths {depths}\n")
    run_log = scratches[0] / "chain.log"
    try:
        process.run_with_deadline(
            ["astrometry-engine", "-c", str(config)]
            + [f"{scratch.name}/{ENGINE_AXY_NAME}" for scratch in scratches],
            parent,
            run_log,
            deadline,
        )
    except process.SolveTimeout:
        pass  # what is solved is kept; the rest is left to the ordinary solve (out of time)
    output = run_log.read_text(errors="replace")
    note = f"(one engine run for {len(scratches)} frames of the batch)\n"
    for scratch in scratches:
        with (scratch / job_files.LOG_NAME).open("a") as log_file:
            log_file.write(note + output)


class AxyTemplate:
    """What ``solve-field --just-augment`` wrote for one set of options, so that the next
    frame with the same options gets its job.axy without starting it again.

    solve-field writes the options as the primary header and copies the source table with a
    header of its own; only the row count and the rows differ from frame to frame (the
    tests compare the result with solve-field's byte for byte). A table laid out otherwise
    than the one it learnt from, or other options, go to solve-field as usual.
    """

    def __init__(self) -> None:
        self.key: tuple[str, ...] | None = None
        self.source_layout = b""
        self.primary = b""
        self.table_header = b""

    @staticmethod
    def key_of(cmd: Sequence[str]) -> tuple[str, ...]:
        """The options of an augment command, without the directory and the input."""
        key = list(cmd[:-1])
        for flag in ("--dir", "--temp-dir"):
            if flag in key:
                key[key.index(flag) + 1] = ""
        return tuple(key)

    def write(self, cmd: Sequence[str], target: Path) -> bool:
        """Write ``target`` for this augment command from the template; False if it cannot."""
        if self.key != self.key_of(cmd):
            return False
        hdus = split_fits(Path(cmd[-1]).read_bytes())
        if hdus is None or hdus.layout != self.source_layout:
            return False
        header = replace_card(
            self.table_header, "NAXIS2", f"{hdus.rows:>20} / number of rows in table"
        )
        if header is None:
            return False
        padding = b"\0" * (-len(hdus.data) % fits_tables.FITS_BLOCK)
        target.write_bytes(self.primary + header + hdus.data + padding)
        return True

    def learn(self, cmd: Sequence[str], written: Path) -> None:
        source = split_fits(Path(cmd[-1]).read_bytes())
        result = split_fits(written.read_bytes())
        if source is None or result is None:
            return
        self.key = self.key_of(cmd)
        self.source_layout = source.layout
        self.primary, self.table_header = result.primary, result.table_header


@dataclass(frozen=True)
class FitsTable:
    primary: bytes  # the primary header block(s)
    table_header: bytes  # extension 1's header block(s)
    layout: bytes  # extension 1's header cards but NAXIS2, to compare layouts
    rows: int
    data: bytes  # extension 1's rows, without padding


def _header_end(raw: bytes, start: int) -> int | None:
    """Offset after the header block(s) starting at ``start`` (END card, then padding)."""
    for offset in range(start, len(raw) - FITS_CARD + 1, FITS_CARD):
        if raw[offset : offset + 8] == b"END     ":
            end = offset + FITS_CARD
            return end + (-(end - start) % fits_tables.FITS_BLOCK)
    return None


def split_fits(raw: bytes) -> FitsTable | None:
    """A primary HDU with no data and a binary table, split into their parts."""
    primary_end = _header_end(raw, 0)
    if primary_end is None or b"NAXIS   =                    0" not in raw[:primary_end]:
        return None
    table_end = _header_end(raw, primary_end)
    if table_end is None:
        return None
    header = raw[primary_end:table_end]
    cards = {
        header[o : o + 8].rstrip().decode("ascii", "replace"): header[o + 10 : o + 30]
        for o in range(0, len(header), FITS_CARD)
    }
    try:
        row_bytes, rows = int(cards["NAXIS1"]), int(cards["NAXIS2"])
        if int(cards.get("PCOUNT", b"0")) != 0:
            return None
    except (KeyError, ValueError):
        return None
    layout = b"".join(
        header[o : o + FITS_CARD]
        for o in range(0, len(header), FITS_CARD)
        if header[o : o + 8] not in (b"NAXIS2  ", b" " * 8)
    )
    data = raw[table_end : table_end + row_bytes * rows]
    if len(data) != row_bytes * rows:
        return None
    return FitsTable(raw[:primary_end], header, layout, rows, data)


def table_rows(axy: Path) -> int:
    """Sources in a job.axy (solver.count_sources without astropy's cost per file)."""
    table = split_fits(axy.read_bytes())
    return table.rows if table is not None else solver.count_sources(axy)


def replace_card(header: bytes, keyword: str, value: str) -> bytes | None:
    card = f"{keyword:<8}= {value}".ljust(FITS_CARD).encode("ascii")
    if len(card) != FITS_CARD:
        return None
    key = f"{keyword:<8}".encode("ascii")
    for offset in range(0, len(header), FITS_CARD):
        if header[offset : offset + 8] == key:
            return header[:offset] + card + header[offset + FITS_CARD :]
    return None


def extract_with_template(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    log_path: Path,
    deadline: float,
    template: AxyTemplate,
    fast: bool = True,
) -> int:
    """``solver.extract_sources``, with the in-process extraction's final solve-field
    --just-augment replaced by the template whenever the options are the same."""
    if not fast:
        return solver.extract_sources(params, prepared, work_dir, log_path, deadline, fast=False)

    def run(cmd: list[str]) -> int:
        augment = cmd[:2] == ["solve-field", "--just-augment"]
        target = work_dir / job_files.AXY_NAME
        if augment and template.write(cmd, target):
            with log_path.open("a") as log_file:
                log_file.write(
                    f"{job_files.AXY_NAME} written as the group's first (same options)\n"
                )
            return 0
        code = process.run_with_deadline(cmd, work_dir, log_path, deadline)
        if augment and code == 0 and target.exists():
            template.learn(cmd, target)
        return code

    options = commands.augment_options(params, work_dir)
    if solver.extract_in_process(params, prepared, work_dir, log_path, run, options) is None:
        return 0
    # anything the fast path cannot do with the template: exactly as an ordinary job
    return solver.extract_sources(params, prepared, work_dir, log_path, deadline, fast=True)
