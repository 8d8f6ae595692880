"""The page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) against a uvicorn server on the tiny runs. Each panel is loaded, its
controls set and its job run to the picture; a mask is drawn with the mouse; a bad value shows
the server's message on the page. Screenshots go to $SDEFLOW_SCREENSHOTS/playground_*.png
(``SDEFLOW_SCREENSHOTS=docs`` refreshes docs/playground_*.png). Skipped, with the
reason, when the browser, its driver or selenium is missing (.ci/run installs them)."""
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest


def _browser_or_skip():
    selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless Chromium is missing: apt-get install -y chromium chromium-driver "
                    f"(found chromium={chromium}, chromedriver={driver})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = chromium
    assert selenium
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def server_url(run_dirs):
    import uvicorn

    from sdeflow.serve import create_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app([run_dirs / "digits", run_dirs / "toy"]),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    b = _browser_or_skip()
    yield b
    b.quit()


def _wait(browser, condition, timeout=40):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(condition)


def _image_shown(browser, css):
    """The first <img> under ``css`` once it has loaded."""
    def ready(b):
        imgs = b.find_elements("css selector", f"{css} img")
        return imgs[0] if imgs and b.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", imgs[0]) else False
    return _wait(browser, ready)


def _tab(browser, name):
    browser.find_element("css selector", f"#tabs button[data-tab={name}]").click()


def _set(browser, form, name, value):
    el = browser.find_element("css selector", f"#{form}-form [name={name}]")
    el.clear()
    el.send_keys(str(value))


def _shot(browser, name):
    """A screenshot in $SDEFLOW_SCREENSHOTS (``SDEFLOW_SCREENSHOTS=docs`` refreshes the docs'
    pictures), else in the temporary folder: a test run never edits the repository."""
    out = Path(os.environ.get("SDEFLOW_SCREENSHOTS") or tempfile.gettempdir())
    out.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(out / f"playground_{name}.png"))


def test_every_panel_works_in_a_real_browser(browser, server_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select
    browser.get(server_url)
    _wait(browser, lambda b: b.find_element("tag name", "body").get_attribute("data-ready"))
    # Explore: the toy run, Heun vs Euler–Maruyama
    Select(browser.find_element("css selector", "#explore-form [name=run]")).select_by_value("toy")
    _set(browser, "explore", "steps", 12)
    browser.find_element("css selector", "#explore-form button[type=submit]").click()
    _image_shown(browser, "#explore-result")
    assert "rms_error_vs_exact_ode" in browser.find_element("id", "explore-result").text
    _shot(browser, "explore")
    # Sample: a bad value shows the server's message, then a grid with NFE and a download
    _tab(browser, "sample")
    _set(browser, "sample", "steps", 5000)
    browser.find_element("css selector", "#sample-form button[type=submit]").click()
    err = _wait(browser, lambda b: b.find_element("id", "error").text)
    assert "less than or equal to 1000" in err
    _set(browser, "sample", "steps", 6)
    _set(browser, "sample", "class_label", 3)
    _set(browser, "sample", "guidance", 1)
    browser.find_element("css selector", "#sample-form button[type=submit]").click()
    _image_shown(browser, "#sample-result")
    assert "NFE" in browser.find_element("id", "sample-result").text
    assert browser.find_element("id", "sample-download").get_attribute("href").endswith("download=1")
    _shot(browser, "sample")
    # Inpaint: drag across the canvas to hide a stripe, then replacement
    _tab(browser, "inpaint")
    canvas = browser.find_element("id", "mask-canvas")
    ActionChains(browser).move_to_element_with_offset(canvas, -100, -20).click_and_hold() \
        .move_by_offset(200, 0).move_by_offset(0, 60).move_by_offset(-200, 0).release().perform()
    hidden = browser.execute_script("return state.mask.flat().filter(v => v === 0).length")
    assert 8 <= hidden < 64
    _set(browser, "inpaint", "steps", 10)
    browser.find_element("css selector", "#inpaint-form button[type=submit]").click()
    _image_shown(browser, "#inpaint-result")
    assert len(browser.find_elements("css selector", "#inpaint-result img")) == 3
    _shot(browser, "inpaint")
    # Compare: Heun and DDIM at three budgets
    _tab(browser, "compare")
    solvers = Select(browser.find_element("css selector", "#compare-form [name=solvers]"))
    solvers.deselect_all()
    solvers.select_by_value("heun")
    solvers.select_by_value("ddim")
    _set(browser, "compare", "steps", "2, 4, 8")
    browser.find_element("css selector", "#compare-form button[type=submit]").click()
    _wait(browser, lambda b: len(b.find_elements("css selector", "#compare-result img")) == 6)
    _image_shown(browser, "#compare-result")
    time.sleep(0.3)  # let the last images paint
    _shot(browser, "compare")
    assert not browser.find_element("id", "error").is_displayed()
