"""The whole main job in a real headless Chromium, through the dashboard only.

Sign in, upload a dataset (the progress bar moves), start a job from the
template's form, watch its chart gain points while it runs (the page is not
reloaded), see it succeed, promote the model, get a prediction from the
"try it" box, and check that a viewer sees no cancel button on a running
job that its owner can cancel. A real Celery worker trains; the real
serving process answers. Screenshots of each step are written to
``var/test/screenshots/`` (kept as CI artifacts).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from django.test import override_settings

from datasets.sample_data import write_csv
from tenants.models import Role
from tests.support.factories import make_member
from tests.support.serving import serving_server
from tests.support.workers import ROOT, celery_worker

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "var" / "test" / "screenshots"
PASSWORD = "correct horse battery staple"
# As root in a container Chromium needs --no-sandbox; the rest keep it off this machine's closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SMALL_PARAMS = {"epochs": "3", "batch_size": "32", "max_len": "20", "embedding_dim": "8", "conv_filters": "8"}
SMALL_PARAMS |= {"lstm_units": "8"}


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM}: `make test` installs Debian's chromium package", pytrace=False)
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test itself are synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def sign_in(browser, base: str, email: str):
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(base + "/")
    assert "/login/" in page.url  # the dashboard needs a session
    page.fill("#id_username", email)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("nav.side")
    return page


def wait_until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` in the page (``page.wait_for_function`` evaluates strings, which the dashboard's CSP
    forbids; ``page.evaluate`` goes through the DevTools protocol, so the policy stays on for the whole test)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {expression}")
        page.wait_for_timeout(200)


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_the_main_job_in_a_browser(browser, live_server, tenant_a, tmp_path):
    owner = tenant_a.owner
    owner.set_password(PASSWORD)
    owner.save()
    viewer = make_member(tenant_a.tenant, role=Role.VIEWER, email="viewer@example.com").user
    viewer.set_password(PASSWORD)
    viewer.save()
    csv = tmp_path / "clicks.csv"
    buffer = io.StringIO()
    write_csv("ctr", 400, buffer, seed=5)
    csv.write_text(buffer.getvalue())
    base = live_server.url

    with (
        celery_worker("gpu,cpu,default"),
        serving_server() as (serving_url, _app),
        override_settings(SERVING_URL=serving_url),
    ):
        page = sign_in(browser, base, owner.email)
        assert tenant_a.tenant.name in page.inner_text("nav.side")
        shot(page, "01-overview")

        # Upload: the progress bar is shown and the page moves to the new dataset once it is stored.
        page.click("text=Datasets")
        page.set_input_files("#up-file", str(csv))
        page.fill("#up-name", "clicks")
        page.fill("#up-label", "clicked")
        page.click("#upload-button")
        page.wait_for_url("**/datasets/*/")
        assert page.eval_on_selector("#dataset-status", "e => e.textContent") in {"validating", "ready"}
        for _ in range(120):
            if page.inner_text("#dataset-status") == "ready":
                break
            page.wait_for_timeout(500)
            page.reload()
        assert page.inner_text("#dataset-status") == "ready"
        assert page.locator("#schema").is_visible() and page.locator("#preview").is_visible()
        shot(page, "02-dataset")

        # A job from the form built from the template's schema.
        page.click("text=Train a model on it")
        page.select_option("#template", "sequence_ctr")
        page.click("#choose-button")
        page.fill("#id_model_name", "clicks")
        page.select_option("#id_label_column", "clicked")
        for name, value in SMALL_PARAMS.items():
            page.fill(f"#id_param_{name}", value)
        shot(page, "03-job-form")
        page.click("#start-job")
        page.wait_for_url("**/jobs/*/")
        page.evaluate("window.__sameDocument = true")
        assert page.locator("#loss-chart circle.point").count() == 0
        # The chart gains a point while the job runs, without reloading the page.
        wait_until(page, "document.querySelectorAll('#loss-chart circle.point').length > 0", timeout=180)
        shot(page, "04-job-running")
        wait_until(page, "document.getElementById('job-status').textContent === 'succeeded'", timeout=240)
        assert page.evaluate("window.__sameDocument") is True
        assert page.locator("#loss-chart circle.point").count() >= 3  # loss for each of 3 epochs, at least
        assert page.locator("#cancel-job").count() == 0
        shot(page, "05-job-succeeded")

        # Promote the published version, then ask it for a prediction.
        page.click("#job-model a")
        page.wait_for_url("**/models/clicks/versions/1/")
        page.click(".crumbs >> text=clicks")
        page.click("button.promote[data-version='1']")
        page.wait_for_selector("[data-alias=production]")
        assert "production → v1" in page.inner_text("[data-alias=production]")
        page.fill("#try-body", '{"instances": ["12 85 3 9 41 7"]}')
        page.click("#try-button")
        wait_until(page, "document.getElementById('try-result').textContent.includes('probability')")
        assert "answered by v1" in page.inner_text("#try-meta")
        shot(page, "06-model-try-it")
        page.goto(base + "/models/clicks/versions/1/")
        page.wait_for_selector("#roc-chart svg polyline")
        shot(page, "07-version-roc")

        # A long job: its owner sees the cancel button, a viewer does not (and cannot use it).
        page.goto(base + "/jobs/new/")
        page.select_option("#template", "sequence_ctr")
        page.select_option("#dataset", index=1)
        page.click("#choose-button")
        page.fill("#id_model_name", "clicks-long")
        page.select_option("#id_label_column", "clicked")
        for name, value in (SMALL_PARAMS | {"epochs": "200"}).items():
            page.fill(f"#id_param_{name}", value)
        page.click("#start-job")
        page.wait_for_url("**/jobs/*/")
        job_url = page.url
        assert page.locator("#cancel-job").is_visible()

        watcher = sign_in(browser, base, viewer.email)
        watcher.goto(job_url)
        assert watcher.inner_text("#role") == "viewer"
        assert watcher.locator("#job-status").is_visible()
        assert watcher.locator("#cancel-job").count() == 0
        assert watcher.locator("a#new-job").count() == 0
        shot(watcher, "08-viewer-job")

        page.click("#cancel-job")
        wait_until(page, "['cancelling', 'cancelled'].includes(document.getElementById('job-status').textContent)")
        wait_until(page, "document.getElementById('job-status').textContent === 'cancelled'", timeout=120)
        shot(page, "09-job-cancelled")
