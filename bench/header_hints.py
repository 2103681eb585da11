"""Benchmark header hints: FITS frames with capture-software headers against the same pixels
with the header stripped (a blind solve), and against a header whose RA is 30 degrees off.

Run from the repository root::

    .venv/bin/python bench/header_hints.py                 # apod1-apod5, one run each
    .venv/bin/python bench/header_hints.py --photos apod2  # one photo

Each photo becomes a 16-bit FITS frame (its grey pixels, rows bottom-up). Its solution is
found once, untimed, by bare solve-field with a scale hint; from it the frame gets an
N.I.N.A.-style header (FOCALLEN and XPIXSZ giving the solved pixel scale, RA/DEC the solved
centre). Three uploads per photo, side by side in one ``nova up`` stack with one worker
(result reuse off): ``stripped`` (pixels only), ``header`` and ``wrong-ra`` (RA + 30 deg).
Each is timed through the API from the upload to the calibration JSON, as bench/run.py
does. Targets (issue #19): header >= 5x faster than stripped; wrong-ra <= 1.2x stripped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402
    APOD,
    REPO,
    WIDTHS,
    NovaClient,
    Stack,
    become_subreaper,
    kill_everything_we_started,
    machine_info,
)

PIXEL_UM = 3.76
VARIANTS = ("stripped", "header", "wrong-ra")
WRONG_RA_DEGREES = 30.0
HEADER_SPEED_TARGET = 5.0
WRONG_COST_TARGET = 1.2


def grey_frame(photo: str) -> np.ndarray:
    grey = np.asarray(Image.open(APOD / f"{photo}.jpg").convert("L"))
    return np.flipud(grey).astype(np.int16) * 64


def known_solution(frame_path: Path, photo: str, work: Path) -> tuple[float, float, float]:
    """(arcsec per pixel, RA, Dec of the centre) by bare solve-field with a scale hint."""
    width = WIDTHS[photo]
    out = work / f"solve-{photo}"
    out.mkdir()
    for downsample in ("2", "1"):
        subprocess.run(
            ["solve-field", "--no-plots", "--overwrite", "--dir", str(out), "--scale-units",
             "degwidth", "--scale-low", str(width * 0.8), "--scale-high", str(width * 1.3),
             "--downsample", downsample, "--new-fits", "none", "--corr", "none", "--rdls",
             "none", "--match", "none", "--index-xyls", "none", "--solved", "none",
             str(frame_path)],
            check=True, capture_output=True, timeout=600, start_new_session=True,
        )  # fmt: skip
        solution = out / f"{frame_path.stem}.wcs"
        if solution.exists():
            header = fits.getheader(solution)
            wcs = WCS(header, relax=True)
            scale = math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
            centre = [(header["IMAGEW"] + 1) / 2, (header["IMAGEH"] + 1) / 2]
            ra, dec = wcs.all_pix2world([centre], 1)[0]
            return scale, float(ra), float(dec)
    raise RuntimeError(f"{photo} did not solve with a scale hint")


def nina_header(scale: float, ra: float, dec: float) -> fits.Header:
    header = fits.Header()
    for key, value in [
        ("IMAGETYP", "LIGHT"), ("EXPOSURE", 120.0), ("XBINNING", 1), ("YBINNING", 1),
        ("XPIXSZ", PIXEL_UM), ("YPIXSZ", PIXEL_UM), ("INSTRUME", "ZWO ASI2600MM Pro"),
        ("FOCALLEN", round(206.264806 * PIXEL_UM / scale, 1)), ("RA", ra % 360),
        ("DEC", dec), ("SWCREATE", "N.I.N.A. 3.1.2.9001"),
    ]:  # fmt: skip
        header[key] = value
    return header


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    cos = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="apod1,apod2,apod3,apod4,apod5")
    parser.add_argument("--runs", type=int, default=1, help="timings per case (median)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-header-hints.md")
    args = parser.parse_args()
    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    become_subreaper()
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="nova-bench-hints-") as scratch:
        work = Path(scratch)
        frames: dict[str, dict[str, Path]] = {}
        truth: dict[str, tuple[float, float, float]] = {}
        for photo in photos:
            data = grey_frame(photo)
            stripped = work / f"{photo}-stripped.fits"
            fits.PrimaryHDU(data).writeto(stripped)
            truth[photo] = scale, ra, dec = known_solution(stripped, photo, work)
            paths = {"stripped": stripped}
            for variant, offset in (("header", 0.0), ("wrong-ra", WRONG_RA_DEGREES)):
                paths[variant] = work / f"{photo}-{variant}.fits"
                fits.PrimaryHDU(data, header=nina_header(scale, ra + offset, dec)).writeto(
                    paths[variant]
                )
            frames[photo] = paths
            print(f"{photo}: {scale:.3f} arcsec/px at {ra:.3f}, {dec:.3f}", flush=True)
        stack = Stack(work / "stack", workers=1).start()
        try:
            client = NovaClient(stack.base, stack.api_key)
            for photo in photos:
                results[photo] = {}
                timings: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
                for _ in range(args.runs):
                    for variant in VARIANTS:
                        record = client.timed_solve(frames[photo][variant], {})
                        info = client.call(f"/api/jobs/{record['job']}/info")
                        cal = record["calibration"] or {}
                        _, ra, dec = truth[photo]
                        record["hints"] = info.get("hints")
                        record["correct"] = bool(cal) and (
                            angular_distance(cal["ra"], cal["dec"], ra, dec) < 0.1
                        )
                        timings[variant].append(record)
                        print(
                            f"{photo} {variant}: {record['status']} in {record['wall']:.2f} s, "
                            f"hints {(record['hints'] or {}).get('source')}",
                            flush=True,
                        )
                for variant, records in timings.items():
                    results[photo][variant] = {
                        "wall": statistics.median(r["wall"] for r in records),
                        "walls": [r["wall"] for r in records],
                        "status": [r["status"] for r in records],
                        "correct": all(r["correct"] for r in records),
                        "hints": records[-1]["hints"],
                    }
        finally:
            stack.stop()
            kill_everything_we_started()
    loads = (load_before, os.getloadavg())
    report = render(results, photos, args.runs, started, loads)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(
        json.dumps({"machine": machine_info(), "results": results}, indent=2, default=str)
    )
    print(report)
    return 0


def render(
    results: dict[str, dict[str, Any]],
    photos: list[str],
    runs: int,
    started: datetime,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    before, after = (" / ".join(f"{x:.2f}" for x in load) for load in loads)
    lines = [
        "# Header hints: FITS frames with and without their header",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, `bench/header_hints.py`, {runs} run(s) per case "
        "(median), one `nova up` stack, 1 worker, result reuse off; upload to calibration JSON "
        "through the API. Machine shared with other developers: figures are noisy "
        f"(load average 1/5/15 min before {before}, after {after}); nova commit {commit}.",
        "",
        "| photo | stripped (blind) s | header s | stripped ÷ header | wrong RA s "
        "| wrong ÷ stripped | wrong RA solved by | all correct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    totals = dict.fromkeys(VARIANTS, 0.0)
    for photo in photos:
        row = results[photo]
        for variant in VARIANTS:
            totals[variant] += row[variant]["wall"]
        wrong_hints = row["wrong-ra"]["hints"] or {}
        by = wrong_hints.get("source")
        if by == "fits-header":
            by = "header " + "+".join(wrong_hints.get("from_header") or [])
        correct = all(row[v]["correct"] for v in VARIANTS)
        lines.append(
            f"| {photo} | {row['stripped']['wall']:.2f} | {row['header']['wall']:.2f} "
            f"| {row['stripped']['wall'] / row['header']['wall']:.1f}× "
            f"| {row['wrong-ra']['wall']:.2f} "
            f"| {row['wrong-ra']['wall'] / row['stripped']['wall']:.2f}× | {by} "
            f"| {'yes' if correct else 'NO'} |"
        )
    lines.append(
        f"| **total** | {totals['stripped']:.2f} | {totals['header']:.2f} "
        f"| **{totals['stripped'] / totals['header']:.1f}×** | {totals['wrong-ra']:.2f} "
        f"| **{totals['wrong-ra'] / totals['stripped']:.2f}×** | | |"
    )
    speed = totals["stripped"] / totals["header"]
    cost = totals["wrong-ra"] / totals["stripped"]
    lines += [
        "",
        f"Targets: header ≥ {HEADER_SPEED_TARGET:g}× faster than stripped — "
        f"{'met' if speed >= HEADER_SPEED_TARGET else 'NOT met'} in total ({speed:.1f}×); "
        f"wrong RA ≤ {WRONG_COST_TARGET:g}× stripped — "
        f"{'met' if cost <= WRONG_COST_TARGET else 'NOT met'} in total ({cost:.2f}×).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
