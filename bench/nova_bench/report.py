"""Report helpers and the sections on targets, the warm path and stage 1; RESULTS.json."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from nova_bench.common import KNOWN_CENTRES
from nova_bench.memory import MemoryPeak, MemorySampler
from nova_bench.results import Results

# -- the report -----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    if a != a or b != b or not b:
        return "–"
    return f"{a / b:.2f}×"


BREAKDOWN = [
    ("upload", "client start", "client uploaded"),
    ("queue→sub", "client uploaded", "processing_started"),
    ("recognise", "processing_started", "processing_finished"),
    ("queue→solve", "processing_finished", "job_started"),
    ("prepare", "job_started", "augment_started"),
    ("extract", "augment_started", "axy_written"),
    ("engine", "axy_written", "wcs_written"),
    ("objects", "wcs_written", "annotations_written"),
    ("finish", None, "job_finished"),
    ("poll lag", "job_finished", "client seen"),
    ("calib GET", "client seen", "client done"),
]


def breakdown(record: dict[str, Any], server: dict[int, dict[str, Any]]) -> dict[str, float]:
    """Where one Nova solve's wall time went, in seconds per stage."""
    stamps: dict[str, float | None] = {}
    stamps.update({f"client {k}": v for k, v in record.get("client", {}).items()})
    stamps.update(server.get(record.get("job") or -1, {}))
    parts: dict[str, float] = {}
    for name, begin, end in BREAKDOWN:
        if begin is None:  # "finish" starts at the last product written
            begin_value = next(
                (
                    stamps[k]
                    for k in ("annotations_written", "wcs_written", "axy_written")
                    if stamps.get(k) is not None
                ),
                None,
            )
        else:
            begin_value = stamps.get(begin)
        end_value = stamps.get(end)
        if isinstance(begin_value, float) and isinstance(end_value, float):
            parts[name] = end_value - begin_value
    return parts


def check_solution(record: dict[str, Any]) -> str:
    calibration = record.get("calibration") or {}
    known = KNOWN_CENTRES.get(record.get("photo", ""))
    if record.get("status") != "success" or "ra" not in calibration or known is None:
        return "FAILED" if record.get("status") != "success" else "?"
    off = max(abs(calibration["ra"] - known[0]), abs(calibration["dec"] - known[1]))
    return "ok" if off < 0.5 else f"OFF by {off:.2f}°"


def _photo_ratios(measured: dict[str, list[dict[str, Any]]], results: Results) -> list[tuple]:
    """(case, ours, bare as a user, bare solving command) per photo case, medians."""
    rows = []
    for key, records in measured.items():
        bare = results.bare.get(key, [])
        if not bare or not records or key.split(" ")[0].endswith(".xyls"):
            continue
        rows.append(
            (
                key,
                median([r["wall"] for r in records]),
                median([b["wall_user"] for b in bare]),
                median([b["wall_direct"] for b in bare]),
            )
        )
    return rows


def render_targets(results: Results, add: Callable[[str], None]) -> None:
    """Issue #8's targets, each with what this run measured and whether it is met."""
    add("## Targets (issue #8)")
    add("")
    add("| target | measured in this run | met? |")
    add("|---|---|---|")

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("**yes**" if ok else "**no**")

    def within(rows: list[tuple], column: int, limit: float) -> tuple[str, bool | None]:
        if not rows:
            return "not measured", None
        worst = max(rows, key=lambda row: row[1] / row[column])
        total = sum(row[1] for row in rows) / sum(row[column] for row in rows)
        text = f"total {total:.2f}×, worst {worst[0]} {worst[1] / worst[column]:.2f}×"
        return text, total <= limit and worst[1] / worst[column] <= limit

    cold = _photo_ratios(results.nova, results)
    text, ok = within(cold, 3, 1.05)
    add(
        f"| API end to end ≤ 1.05× bare solving command, per photo and in total | {text} "
        f"| {verdict(ok)} |"
    )
    text, ok = within(cold, 2, 1.05)
    add(f"| (the same against bare solve-field as a user runs it) | {text} | {verdict(ok)} |")
    warm = _photo_ratios(results.warm, results)
    for column, against in ((3, "bare solving command"), (2, "bare solve-field as a user")):
        if warm:
            total = sum(row[1] for row in warm) / sum(row[column] for row in warm)
            add(
                f"| warm path ≥ 3× faster than {against} over the photos in total "
                f"| {1 / total:.2f}× faster | {verdict(1 / total >= 3)} |"
            )
    walls = [r["wall"] for records in results.reupload.values() for r in records]
    if walls:
        add(
            f"| identical re-upload answered in < 0.2 s | slowest {max(walls):.3f} s "
            f"| {verdict(max(walls) < 0.2)} |"
        )
    polls = results.hammer_solving
    if polls:
        ok = polls["rate"] >= 1000 and polls["p99_ms"] < 50 and polls["errors"] == 0
        add(
            f"| ≥ 1,000 status polls/s, p99 < 50 ms, while solving | {polls['rate']:.0f}/s, "
            f"p99 {polls['p99_ms']:.1f} ms, {polls['errors']} errors | {verdict(ok)} |"
        )
    rates = {w: median([b["per_minute"] for b in bs]) for w, bs in results.throughput.items()}
    if 1 in rates and 2 in rates:
        gain = rates[2] / rates[1]
        add(
            f"| 2 workers ≥ 1.8× the jobs/min of 1 | {gain:.2f}× ({rates[1]:.0f} → "
            f"{rates[2]:.0f} jobs/min) | {verdict(gain >= 1.8)} |"
        )
    add("")


def hammer_tool(results: Results) -> str:
    if results.hammer_solving.get("tool") == "wrk":
        return "wrk, keep-alive connections"
    return "Python threads, a new loopback connection per request"


def render_warm(results: Results, add: Callable[[str], None]) -> None:
    """Section 1b: the warm path (in-process extraction + the warm engine) vs bare
    solve-field; section 1c: stage 1 alone, in-process vs ``solve-field --just-augment``."""
    if not results.warm:
        return
    add("## 1b. The warm path in-process vs bare solve-field")
    add("")
    add(
        "*warm* is `nova.engine.solver.solve` in the benchmark's own process: stage 1 by the "
        "in-process extraction (`nova/engine/extraction.py`: the same `job.axy` as `solve-field "
        "--just-augment` without its Python helpers), stage 2 by "
        + (
            "the warm engine (PyPI `astrometry`, index files opened once, in "
            f"{fmt(results.warm_load_seconds, 3)} s)"
            if results.settings.warm_engine
            else "`astrometry-engine`, as Nova's workers run it by default"
        )
        + ", with bare solve-field's "
        "parameters (nova's defaults, ±20 % hint), full resolution again when `--downsample 2` "
        "leaves too few stars or no solution. No queue, no web server. The ratios are "
        "warm ÷ bare (below 1: the warm path is faster)."
    )
    add("")
    add(
        "| photo | hints | bare as a user (s) | bare, solving command (s) | warm (s) "
        "| warm / bare as a user | warm / solving command | warm answer |"
    )
    add("|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[float]] = {"user": [], "direct": [], "warm": []}
    for key, records in results.warm.items():
        bare = results.bare.get(key, [])
        if not bare or not records:
            continue
        user = median([r["wall_user"] for r in bare])
        direct = median([r["wall_direct"] for r in bare])
        warm = median([r["wall"] for r in records])
        totals["user"].append(user)
        totals["direct"].append(direct)
        totals["warm"].append(warm)
        photo, hints = key.rsplit(" ", 1) if " " in key else (key, "")
        answer = check_solution(records[-1])
        if any(r.get("fallback") for r in records):
            answer += " (astrometry-engine fallback)"
        if not all(r.get("in_process", True) for r in records):
            answer += " (stage 1 by solve-field)"
        add(
            f"| {photo} | {hints} | {fmt(user)} | {fmt(direct)} | {fmt(warm)} "
            f"| {ratio(warm, user)} | {ratio(warm, direct)} | {answer} |"
        )
    if totals["warm"]:
        user, direct, warm = (sum(totals[k]) for k in ("user", "direct", "warm"))
        add(
            f"| **total** | all | {fmt(user)} | {fmt(direct)} | {fmt(warm)} "
            f"| **{ratio(warm, user)}** | **{ratio(warm, direct)}** | |"
        )
    add("")
    render_stage1(results, add)


def render_stage1(results: Results, add: Callable[[str], None]) -> None:
    if not results.stage1:
        return
    add("## 1c. Stage 1 alone: in-process extraction vs `solve-field --just-augment`")
    add("")
    add(
        "Both as `nova.engine.solver.extract_sources` runs them (`fast=False`, then `fast=True`), "
        "on "
        "each photo with its scale hint and nova's defaults (`--downsample 2`, `--objs 1000`), "
        "in the benchmark's process, one after the other. *identical* compares the source "
        "tables of the two `job.axy` byte for byte."
    )
    add("")
    add("| photo | solve-field --just-augment (s) | in-process (s) | ratio | sources | identical |")
    add("|---|---|---|---|---|---|")
    theirs_total = ours_total = 0.0
    for photo, records in results.stage1.items():
        theirs = median([r["solve_field"] for r in records])
        ours = median([r["in_process"] for r in records])
        theirs_total += theirs
        ours_total += ours
        same = "yes" if all(r["same_sources"] for r in records) else "**no**"
        if any(r["fell_back"] for r in records):
            same += " (fell back to solve-field)"
        add(
            f"| {photo} | {fmt(theirs, 3)} | {fmt(ours, 3)} | {ratio(ours, theirs)} "
            f"| {records[-1]['sources']} | {same} |"
        )
    add(
        f"| **total** | {fmt(theirs_total, 3)} | {fmt(ours_total, 3)} "
        f"| **{ratio(ours_total, theirs_total)}** | | |"
    )
    add("")


def programs(peak: MemoryPeak, top: int = 4) -> str:
    ranked = sorted(peak.hwm_by_name.items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{name} {kb / 1024:.0f}" for name, kb in ranked)


def _span(entry: dict[str, Any], begin: str, end: str) -> float:
    a, b = entry.get(begin), entry.get(end)
    return b - a if isinstance(a, float) and isinstance(b, float) else float("nan")


def raw_json(results: Results, sampler: MemorySampler) -> dict[str, Any]:
    return {
        "settings": results.settings.__dict__,
        "machine_before": results.machine_before,
        "machine_after": results.machine_after,
        "bare": results.bare,
        "nova": results.nova,
        "reupload": results.reupload,
        "warm": results.warm,
        "warm_load_seconds": results.warm_load_seconds,
        "stage1": results.stage1,
        "hammer_solving": results.hammer_solving,
        "hammer_idle": results.hammer_idle,
        "hammered_job": {k: v for k, v in results.hammered_job.items() if k != "during_solve"},
        "throughput": results.throughput,
        "server": results.server,
        "memory": {f"{r} | {lab}": peak.__dict__ for (r, lab), peak in sampler.peaks.items()},
        "total_seconds": results.total_seconds,
    }
