"""The site in a real browser (Debian's Chromium driven by Playwright) against ``nova up``.

Sign up, upload apod4.jpg with a scale hint, watch the live status reach "done" without
reloading, open the annotated view, download wcs.fits, find the image by "Ursa Major" and by
position, make it private and check that a second user cannot see it. Screenshots of the
main pages are saved in test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.io import fits
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.paths import REPO
from tests.support.processes import wait_for
from tests.support.stack import live_stack

pytestmark = pytest.mark.engine
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, headless, with nothing that would call outside this machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_stack(tmp_path_factory.mktemp("browser")) as stack:
        yield stack.base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is missing: scripts/install-system.sh --test"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def sign_up(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=display_name]", email.split("@")[0])
    page.fill("input[name=password]", "a long password")
    page.fill("input[name=confirm]", "a long password")
    page.click("button[type=submit]")
    # The sign-in page follows, the email filled in; the first sign-in shows the API key.
    expect(page.locator("input[name=email]")).to_have_value(email)
    page.fill("input[name=password]", "a long password")
    page.click("form.stack button[type=submit]")
    expect(page.locator("#api-key")).to_have_text(re.compile(r"^[a-z0-9]{24}$"))


def test_a_photo_from_upload_to_privacy_in_a_real_browser(
    site: str, browser: Browser, apod: Path, tmp_path: Path
) -> None:
    ann = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = ann.new_page()
    sign_up(page, site, "ann@example.org")
    shot(page, "api-key")

    # Upload with a scale hint; the status page follows the job without a reload.
    page.goto(f"{site}/upload")
    page.set_input_files("input[name=file]", str(apod / "apod4.jpg"))
    page.click("text=Advanced options")
    page.check("input[name=scale_hint]")
    page.fill("input[name=scale_lower]", "25")
    page.fill("input[name=scale_upper]", "40")
    shot(page, "upload")
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )
    page.click("button:has-text('Solve')")
    page.wait_for_url(re.compile(r".*/status/\d+$"))
    # The status page's own script polls and lands on the result page when the job is done.
    page.wait_for_url(re.compile(r".*/user_images/\d+$"), timeout=120_000)
    status_loads = [url for url in navigations if "/status/" in url]
    assert len(status_loads) == 1, navigations  # never reloaded while waiting
    image_url = page.url
    expect(page.locator("table.calibration")).to_contain_text("12h 2")
    shot(page, "result")

    # The viewer switches to the annotated picture in place.
    page.click("nav.views a:has-text('annotated')")
    expect(page.locator("#viewer")).to_have_attribute("src", re.compile(r"/annotated_display/"))
    # Polled from here: Playwright's in-page wait_for_function evaluates a string, which the
    # site's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    assert wait_for(
        lambda: page.evaluate(
            "document.getElementById('viewer').complete && "
            "document.getElementById('viewer').naturalWidth > 0"
        ),
        60,
    )
    shot(page, "annotated")

    # Download wcs.fits like a person would.
    with page.expect_download() as download_info:
        page.click("a:has-text('wcs.fits')")
    download = download_info.value
    saved = tmp_path / "wcs.fits"
    download.save_as(saved)
    assert download.suggested_filename == "wcs.fits"
    assert fits.getheader(saved)["CTYPE1"] == "RA---TAN-SIP"

    # Find it by name and by position.
    page.goto(f"{site}/search")
    page.fill("input[name=q]", "Ursa Major")
    page.click("button:has-text('Find images')")
    expect(page.locator(f"ul.grid a[href='{image_url.removeprefix(site)}']")).to_be_visible()
    shot(page, "search-name")
    page.goto(f"{site}/search")
    page.fill("input[name=ra]", "187.2")
    page.fill("input[name=dec]", "+56.7")
    page.fill("input[name=radius]", "5")
    page.click("button:has-text('Find fields here')")
    expect(page.locator(f"ul.grid a[href='{image_url.removeprefix(site)}']")).to_be_visible()
    shot(page, "search-position")

    # Make it private; a second user then cannot see it anywhere.
    page.goto(image_url)
    page.click("#toggle-visibility")
    expect(page.locator("p.meta")).to_contain_text("private")
    bob = browser.new_context().new_page()
    sign_up(bob, site, "bob@example.org")
    response = bob.goto(image_url)
    assert response is not None and response.status == 404
    bob.goto(f"{site}/search?q=Ursa+Major")
    expect(bob.locator(f"ul.grid a[href='{image_url.removeprefix(site)}']")).to_have_count(0)
    bob.goto(f"{site}/explore")
    expect(bob.locator(f"ul.grid a[href='{image_url.removeprefix(site)}']")).to_have_count(0)
    page.goto(f"{site}/dashboard")
    expect(page.locator(f"ul.grid a[href='{image_url.removeprefix(site)}']")).to_be_visible()
    shot(page, "dashboard")
    page.goto(f"{site}/explore")
    shot(page, "explore")


def test_the_pages_fit_a_phone(site: str, browser: Browser) -> None:
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    for path in ("/upload", "/explore", "/search", "/signin"):
        page.goto(site + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)  # nothing wider than the screen
    shot(page, "phone-signin")


def upload_apod4_with_hint(page: Page, site: str, apod: Path) -> None:
    page.goto(f"{site}/upload")
    page.set_input_files("input[name=file]", str(apod / "apod4.jpg"))
    page.click("text=Advanced options")
    page.check("input[name=scale_hint]")
    page.fill("input[name=scale_lower]", "25")
    page.fill("input[name=scale_upper]", "40")
    page.click("button:has-text('Solve')")


def test_the_status_page_follows_the_live_event_stream(
    site: str, browser: Browser, apod: Path
) -> None:
    page = browser.new_context().new_page()
    sign_up(page, site, "cleo@example.org")
    streams: list[tuple[str, int, str]] = []
    state_fetches: list[str] = []
    page.on(
        "response",
        lambda response: (
            streams.append(
                (response.url, response.status, response.headers.get("content-type", ""))
            )
            if "/events" in response.url
            else None
        ),
    )
    page.on(
        "request",
        lambda request: state_fetches.append(request.url) if "/state" in request.url else None,
    )
    upload_apod4_with_hint(page, site, apod)
    page.wait_for_url(re.compile(r".*/status/\d+$"))
    submission_id = page.url.rsplit("/", 1)[1]
    page.wait_for_url(re.compile(r".*/user_images/\d+$"), timeout=120_000)
    expect(page.locator("table.calibration")).to_contain_text("12h 2")
    # The page opened the submission's stream and drew the state at its events: one fetch
    # per event (a submission's solve has at most six), not one a second.
    assert any(
        url.endswith(f"/api/submissions/{submission_id}/events")
        and status == 200
        and kind.startswith("text/event-stream")
        for url, status, kind in streams
    ), streams
    assert 1 <= len(state_fetches) <= 6, state_fetches


def test_the_status_page_polls_when_the_stream_is_refused(
    site: str, browser: Browser, apod: Path
) -> None:
    page = browser.new_context().new_page()
    sign_up(page, site, "dan@example.org")
    # As when every watcher place is taken: the server answers 503.
    page.route(
        re.compile(r".*/api/submissions/\d+/events$"),
        lambda route: route.fulfill(status=503, headers={"Retry-After": "10"}, body="busy"),
    )
    upload_apod4_with_hint(page, site, apod)
    page.wait_for_url(re.compile(r".*/status/\d+$"))
    page.wait_for_url(re.compile(r".*/user_images/\d+$"), timeout=120_000)
    expect(page.locator("table.calibration")).to_contain_text("12h 2")
