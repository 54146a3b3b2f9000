"""The status page in a real headless browser: Debian's chromium driven by Selenium through
Debian's chromedriver, against a live server holding a few hundred overviews in every state and
a running sweep with chunks. A staff user logs in through the admin's form; the test reads what
the browser drew (the progress bar's value and width, the histogram's bars, the status bars),
watches the page update itself from its JSON feed after the sweep moves on, and saves a
screenshot to var/screenshots/status.png.

Never skipped: the browser is installed when missing (``scripts/services.py ensure chromium``,
which ``make test`` runs first); where it cannot be installed the test fails and says why.
"""

from __future__ import annotations

import html as html_lib
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from catalog.models import CatalogIntegration, SweepRun
from ops import views as ops_views
from overviews.models import CatalogStatus, CourseOverview
from scripts.services import CHROMEDRIVER, CHROMIUM, ensure_chromium
from tasks.refresh import refresh_course
from tests.browser.seed import seed_overviews, seed_schedule, seed_sweeps

SCREENSHOT = Path(__file__).resolve().parents[2] / "var" / "screenshots" / "status.png"
OVERVIEWS = 400
CHUNKS_TOTAL, CHUNKS_DONE = 12, 5
WAIT = 20  # seconds for anything the page does by itself (a busy shared machine is slow)


@pytest.fixture(scope="module")
def browser():
    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root (CI containers), where chromium's sandbox refuses
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def seeded(transactional_db, monkeypatch):
    monkeypatch.setattr(ops_views, "POLL_MS", 500)  # the live server runs in this process
    # A live server needs committed rows, so these tests flush the tables after each other: the
    # data migrations' rows (the enabled configuration, the schedule) are seeded again here.
    CatalogIntegration.objects.create(enabled=True)
    expected = seed_overviews(OVERVIEWS)
    seed_schedule(24)
    run = seed_sweeps(chunks_total=CHUNKS_TOTAL, chunks_done=CHUNKS_DONE, courses_seen=150)
    User.objects.create_user("operator", password="s3cret-pass", is_staff=True, is_superuser=True)
    return {**expected, "run": run}


def log_in(driver, base: str) -> None:
    driver.get(f"{base}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys("operator")
    driver.find_element(By.NAME, "password").send_keys("s3cret-pass")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # #user-tools is only on pages of a logged-in user (the login page has the header too)
    WebDriverWait(driver, WAIT).until(
        lambda d: "/admin/login/" not in d.current_url and d.find_elements(By.ID, "user-tools")
    )


def width_ratio(driver, inner_id: str, outer_id: str) -> float:
    return driver.execute_script(
        "return document.getElementById(arguments[0]).getBoundingClientRect().width"
        " / document.getElementById(arguments[1]).getBoundingClientRect().width;",
        inner_id,
        outer_id,
    )


def test_the_status_page_draws_the_sweep_and_the_charts(browser, live_server, seeded):
    base = live_server.url
    log_in(browser, base)
    # the admin index links to the page (all well: no banner)
    link = browser.find_element(By.CSS_SELECTOR, "#ops-status-link a")
    assert browser.find_elements(By.ID, "ops-banner") == []
    link.click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "sweep-progress"))
    assert browser.title.startswith("Catalog sync status")

    # the progress bar: chunks_done / chunks_total, as a value and as drawn width
    percent = round(100 * CHUNKS_DONE / CHUNKS_TOTAL, 1)
    bar = browser.find_element(By.ID, "sweep-progress")
    assert float(bar.get_attribute("aria-valuenow")) == percent
    assert width_ratio(browser, "sweep-progress-fill", "sweep-progress") == pytest.approx(
        percent / 100, abs=0.01
    )
    assert browser.find_element(By.ID, "sweep-percent").text == f"{percent}%"
    assert browser.find_element(By.ID, "sweep-chunks-done").text == str(CHUNKS_DONE)
    assert browser.find_element(By.ID, "sweep-courses-total").text == str(OVERVIEWS)
    assert browser.find_element(By.ID, "sweep-eta").text not in ("", "\u2013")

    # the histogram: one bar per bucket, its count as seeded, heights in proportion
    bars = browser.find_elements(By.CSS_SELECTOR, "#age-histogram g.age-bar")
    drawn = {
        html_lib.unescape(g.get_attribute("data-bucket")): int(g.get_attribute("data-count")) for g in bars
    }
    assert drawn == seeded["buckets"]
    heights = {
        html_lib.unescape(g.get_attribute("data-bucket")): g.find_element(By.TAG_NAME, "rect").rect["height"]
        for g in bars
    }
    tallest = max(seeded["buckets"], key=seeded["buckets"].get)
    for bucket, count in seeded["buckets"].items():
        expected = heights[tallest] * count / seeded["buckets"][tallest]
        assert heights[bucket] == pytest.approx(expected, abs=1.5), bucket
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#age-histogram g.age-bar text")]
    assert str(seeded["buckets"]["<1h"]) in labels and "never" in labels

    # counts by status: one bar each, widths in proportion
    rows = browser.find_elements(By.CSS_SELECTOR, "#status-chart g.status-bar")
    assert {g.get_attribute("data-status"): int(g.get_attribute("data-count")) for g in rows} == seeded[
        "statuses"
    ]
    ok_width = next(g for g in rows if g.get_attribute("data-status") == "ok").find_element(
        By.TAG_NAME, "rect"
    )
    assert ok_width.rect["width"] > 100  # most rows are ok: the longest bar

    # badges and failures
    assert browser.find_element(By.ID, "calls-state").text == "ON"
    assert browser.find_element(By.ID, "worker-state").text == "unknown"  # embedded broker: no ping
    failed = browser.find_elements(By.CSS_SELECTOR, "#failed-courses tbody a")
    assert len(failed) == seeded["statuses"]["error"] or len(failed) == 15
    assert "/admin/overviews/courseoverview/" in failed[0].get_attribute("href")

    # live: the sweep moves on, the page follows from its feed without a reload
    SweepRun.objects.filter(pk=seeded["run"].pk).update(
        chunks_done=9, courses_seen=300, heartbeat_at=timezone.now()
    )
    WebDriverWait(browser, WAIT).until(
        lambda d: float(d.find_element(By.ID, "sweep-progress").get_attribute("aria-valuenow")) == 75.0
    )
    WebDriverWait(browser, WAIT).until(
        lambda d: width_ratio(d, "sweep-progress-fill", "sweep-progress") == pytest.approx(0.75, abs=0.01)
    )
    assert browser.find_element(By.ID, "sweep-chunks-done").text == "9"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(height + 160, 4000))
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000


def test_a_failed_course_is_refreshed_from_its_page(browser, live_server, seeded):
    """From the status page's failure list to the course's page, and its Refresh button."""
    log_in(browser, live_server.url)
    browser.get(f"{live_server.url}/admin/status/")
    first = browser.find_element(By.CSS_SELECTOR, "#failed-courses tbody a")
    key = first.text
    first.click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "refresh-button"))
    assert CourseOverview.objects.get(id=key).catalog_status == CatalogStatus.ERROR
    with mock.patch.object(refresh_course, "apply_async") as queued:
        queued.return_value.id = "task-1"
        browser.find_element(By.ID, "refresh-button").click()
        WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "ul.messagelist li"))
    assert queued.call_args.args[0] == (key,)
    texts = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li")]
    assert any("1 course refresh(es) queued" in t for t in texts), texts
    assert browser.find_element(By.CSS_SELECTOR, "#content h2").text == key  # back on the course page
