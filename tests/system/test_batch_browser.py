"""A time series through the upload page in a real browser (Debian's Chromium) against
``nova up``: several star lists sent as "one time series", the batch page filling its table
and drift plot without a reload, and "download all WCS"."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.support.stack import live_stack
from tests.support.starfields import sequence, write_frames
from tests.system.test_browser import browser, shot, sign_up  # noqa: F401  (fixtures and helpers)

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_stack(tmp_path_factory.mktemp("batch-browser")) as stack:
        yield stack.base


def test_a_time_series_from_the_upload_page(
    site: str,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    frames = sequence(6, seed=11)
    paths = write_frames(frames, tmp_path / "frames")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    sign_up(page, site, "series@example.org")
    page.goto(f"{site}/upload")
    page.set_input_files("input[name=file]", [str(path) for path in paths])
    page.check("input[name=time_series]")
    page.click("text=Advanced options")
    page.fill("input[name=image_width]", "1024")
    page.fill("input[name=image_height]", "768")
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )
    page.click("button:has-text('Solve')")
    page.wait_for_url(re.compile(r".*/batches/\d+$"))
    # The page's script polls /api/batches/B and redraws until every frame has ended.
    summary = page.locator("#batch-summary")
    expect(summary).to_have_attribute("data-status", "done", timeout=180_000)
    expect(summary).to_contain_text("6 solved, 0 failed of 6")
    assert len([url for url in navigations if "/batches/" in url]) == 1, navigations
    rows = page.locator("#batch-frames tr")
    expect(rows).to_have_count(6)
    for number, frame in enumerate(frames):
        row = rows.nth(number)
        expect(row).to_contain_text(frame.name)
        expect(row).to_contain_text("success")
        expect(row.locator("td").nth(3)).to_have_text(re.compile(r"^100\.\d{5}$"))  # RA
        expect(row.locator("td").nth(6)).to_have_text(re.compile(r"^7\.03\d\d$"))  # "/px
    # The drift plot: one line east, one north, through every solved frame.
    lines = page.locator("#drift polyline")
    expect(lines).to_have_count(2)
    points = lines.first.get_attribute("points") or ""
    assert len(points.split()) == 6, points
    shot(page, "batch")

    with page.expect_download() as download_info:
        page.click("a:has-text('download all WCS')")
    archive = zipfile.ZipFile(io.BytesIO(Path(download_info.value.path()).read_bytes()))
    assert sorted(archive.namelist()) == [f"frame{k:04d}.wcs" for k in range(6)]
    context.close()
