"""The MLflow UI in a real browser (issue 14): a tiny tracked sweep, its best encoder promoted,
then `leoclr ui` on 127.0.0.1 and Debian's Chromium, headless, driven by Selenium through
chromedriver. What a researcher opens first must show the sweep: the experiment's runs table
lists the sweep's run and its named trial runs, a trial's page shows its params and metrics, the
model version page shows the `candidate` alias. Screenshots of each page are saved in the
test's tmp folder (printed at the end).

Skips, naming what is missing, only when chromium or chromedriver is not installed (.ci/run
installs both with apt-get where it can).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from leoclr_platform import spaces
from leoclr_platform.sweep import SweepRequest, run_sweep
from mlflow_checks import tracked_runs
from processes import free_port

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PAGE_SECONDS = 120  # the UI's JavaScript bundle is large; a busy 2-core machine takes a while


def _missing() -> str | None:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path]
    if missing:
        return (f"{' and '.join(missing)} not installed (Debian: apt-get install chromium chromium-driver; "
                ".ci/run does it as root)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def ui(ray_runtime, tmp_path_factory):
    """A tiny tracked sweep with its best encoder promoted, served by `leoclr ui`."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from leoclr_platform.registry import promote

    home = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    spec = dataclasses.replace(spaces.load_space("smoke"), trials=2, max_epochs=1)
    spaces.validate_space(spec)
    run_sweep(SweepRequest(spec, name="browsed", storage=str(home / "runs"), tracking_uri=uri, verbose=0))
    promote(uri, sweep="browsed", out=lambda *a: None)
    port = free_port()
    env = {**os.environ, "LEOCLR_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(home / "ui.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "leoclr_platform", "ui", "--tracking-uri", uri,
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, server, home / "ui.log")
        yield url, uri, home
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"leoclr ui did not answer on {url}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def browser(ui):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def _page_shows(driver, texts: list[str], shot: Path, timeout: float = PAGE_SECONDS) -> str:
    """Wait until the page's visible text holds every one of `texts`; screenshot it either way."""
    deadline = time.time() + timeout
    body = ""
    while time.time() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(t in body for t in texts):
            break
        time.sleep(1)
    driver.save_screenshot(str(shot))
    missing = [t for t in texts if t not in body]
    assert not missing, f"{missing} not on {driver.current_url} (screenshot {shot}); page text: {body[:1500]}"
    return body


def _expand_child_runs(driver, parent_name: str) -> None:
    """The runs table folds a parent's child runs under it: click the expander (a "+" button in
    the run-name cell, MLflow 3.17's RunNameCellRenderer) of the parent's row."""
    for row in driver.find_elements("css selector", "[role='row']"):
        if parent_name in row.text:
            buttons = row.find_elements("css selector", "button[data-component-id*='runnamecellrenderer']")
            assert buttons, f"no expander in the row of {parent_name!r}: {row.get_attribute('outerHTML')[:500]}"
            driver.execute_script("arguments[0].click()", buttons[0])
            return
    raise AssertionError(f"no row of {parent_name!r} in the runs table")


def test_the_runs_table_lists_the_sweep_and_its_named_trials(ui, browser, tmp_path):
    url, uri, _ = ui
    client, parent, runs = tracked_runs(uri, "browsed")
    assert len(runs) == 2
    browser.get(f"{url}/#/experiments/{parent.info.experiment_id}/runs")
    _page_shows(browser, [parent.info.run_name], tmp_path / "runs_table.png")
    _expand_child_runs(browser, parent.info.run_name)
    _page_shows(browser, [r.info.run_name for r in runs.values()], tmp_path / "runs_table_expanded.png")
    print(f"\nscreenshots in {tmp_path}")


def test_a_trial_page_shows_its_params_and_metrics(ui, browser, tmp_path):
    url, uri, _ = ui
    client, parent, runs = tracked_runs(uri, "browsed")
    trial = next(iter(runs.values()))
    browser.get(f"{url}/#/experiments/{parent.info.experiment_id}/runs/{trial.info.run_id}")
    _page_shows(browser, [trial.info.run_name, "temperature", "attraction_strategy", "val_knn_top1"],
                tmp_path / "trial_run.png")


def test_the_model_version_page_shows_the_candidate_alias(ui, browser, tmp_path):
    url, uri, _ = ui
    from mlflow.tracking import MlflowClient

    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("leoclr-encoder", "candidate")
    browser.get(f"{url}/#/models/leoclr-encoder/versions/{version.version}")
    _page_shows(browser, ["leoclr-encoder", "candidate"], tmp_path / "model_version.png")
