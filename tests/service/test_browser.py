"""The viewer in a real headless Chromium (system `chromium` + `chromedriver`, Selenium): `meddx serve` runs as a
subprocess on a free loopback port with the demo segmenter; a synthetic volume is posted; the test signs in with the
token, opens the worklist, clicks the study, scrolls slices and checks the overlay and the finding on the page.
The screenshot is kept in the test's tmp folder (and copied to $MEDDX_SCREENSHOT when set: docs/viewer.png)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.service.helpers import AUTH, TOKEN, demo_volume, dicom_series_zip, free_port, png_bytes

REPO = Path(__file__).resolve().parents[2]
DEMO_SEG = REPO / "tests" / "fixtures" / "runs" / "demo_seg"
DEMO_CLS = REPO / "tests" / "fixtures" / "runs" / "demo_cls"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM or not CHROMEDRIVER, reason="needs the system chromium and chromedriver "
                       "(apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`meddx serve demo_seg demo_cls` on a free loopback port, stopped at the end."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("selenium")
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "MEDDX_TOKEN": TOKEN}
    log = open(tmp / "serve.log", "wb")
    cmd = [sys.executable, "-c", "import sys; from meddx.cli import main; sys.exit(main())", "serve",
           str(DEMO_SEG), str(DEMO_CLS), "--port", str(port), "--results", str(tmp / "results"),
           "--orthanc", "http://127.0.0.1:8042"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 150
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail("meddx serve exited: " + (tmp / "serve.log").read_text(errors="replace")[-800:])
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("meddx serve did not come up in 150 s")
        r2 = httpx.post(url + "/v1/predict", params={"model": "demo_cls"}, headers=AUTH,
                        files={"file": ("x.png", png_bytes(7))}, timeout=120)
        assert r2.status_code == 200, r2.text
        vol = demo_volume(tmp / "study.nii.gz").read_bytes()
        r = httpx.post(url + "/v1/report", params={"model": "demo_seg"}, headers=AUTH,
                       files={"file": ("study.nii.gz", vol)}, timeout=180)
        assert r.status_code == 200 and "<html" in r.text.lower(), r.text[:300]
        study = httpx.get(url + "/v1/studies/" + r.headers["x-study-id"], headers=AUTH, timeout=30).json()
        ct = httpx.post(url + "/v1/predict", params={"model": "demo_cls"}, headers=AUTH,
                        files={"file": ("ct.zip", dicom_series_zip(tmp / "ct"))}, timeout=120)
        assert ct.status_code == 200, ct.text
        # as the PACS watcher stores it: with the Orthanc study id the viewer links to
        res_file = tmp / "results" / ct.json()["id"] / "result.json"
        res = json.loads(res_file.read_text())
        res["orthanc_study"] = "0a1b2c3d-orthanc-study"
        res_file.write_text(json.dumps(res))
        yield {"url": url, "study": study, "ct": ct.json(), "png": r2.json(), "log": tmp / "serve.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture()
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1150",
              "--disable-extensions", "--no-first-run"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _overlay_pixels(drv: Any) -> int:
    return int(drv.execute_script(
        "const c = document.getElementById('overlay'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"))


def test_viewer_worklist_study_slices_overlay(server: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    drv, study = browser, server["study"]
    wait = WebDriverWait(drv, 30)
    drv.get(server["url"] + "/")
    wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN)
    drv.find_element(By.CSS_SELECTOR, "#login-form button").click()
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#worklist-table tbody tr.study-row"))
    assert len(rows) == 3
    row = next(r for r in rows if r.get_attribute("data-id") == study["id"])
    assert study["label"] in row.text
    drv.save_screenshot(str(tmp_path / "worklist.png"))
    row.click()

    wait.until(ec.text_to_be_present_in_element((By.ID, "finding"), study["label"]))
    wait.until(lambda d: d.find_element(By.ID, "slice-label").text.endswith("/ 12"))
    finding = drv.find_element(By.ID, "finding").text
    assert f"{100 * study['probability']:.1f} %" in finding
    assert "token" not in drv.current_url.lower() and TOKEN not in drv.current_url

    # scroll slices: keyboard on the viewport, the mouse wheel, and the slider all move the slice
    vp = drv.find_element(By.ID, "viewport")
    start = int(vp.get_attribute("data-slice"))
    vp.click()
    step = Keys.ARROW_DOWN if start > 0 else Keys.ARROW_UP
    vp.send_keys(step)
    moved = int(vp.get_attribute("data-slice"))
    assert moved == start + (-1 if step == Keys.ARROW_DOWN else 1)
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    ActionChains(drv).scroll_from_origin(ScrollOrigin.from_element(vp), 0, 120).perform()
    wait.until(lambda d: int(vp.get_attribute("data-slice")) != moved)

    # the overlay: drawn on the lesion's key slice, opacity follows the slider, and it can be hidden
    key = study.get("key_slices") or []
    mask_slices = [les["centroid_px"][0] for les in study["lesions"]]
    target = int(round(mask_slices[0])) if mask_slices else (key[0] if key else 0)
    drv.execute_script("const s = document.getElementById('slice'); s.value = arguments[0];"
                       "s.dispatchEvent(new Event('input'));", target)
    assert drv.find_element(By.ID, "slice-label").text.startswith(f"{target + 1} /")
    if study["lesions"]:
        assert _overlay_pixels(drv) > 0
    drv.execute_script("const s = document.getElementById('opacity'); s.value = 80;"
                       "s.dispatchEvent(new Event('input'));")
    assert drv.find_element(By.ID, "overlay").value_of_css_property("opacity") == "0.8"
    assert "segmentation" in drv.find_element(By.ID, "overlay-kind").text
    assert len(drv.find_elements(By.CSS_SELECTOR, "#key-images img")) >= 1
    assert drv.find_elements(By.CSS_SELECTOR, "#lesions tbody tr")
    assert drv.find_element(By.ID, "probabilities").text.count("%") == 2
    drv.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "viewer.png"
    assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("MEDDX_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MEDDX_SCREENSHOT"])

    # the report made by POST /v1/report is linked from the study page
    links = drv.find_elements(By.CSS_SELECTOR, "#links a.report-link")
    assert [a.text for a in links] == ["Report (HTML)", "Report (PDF)"]
    main = drv.current_window_handle
    links[0].click()
    wait.until(lambda d: len(d.window_handles) == 2)
    drv.switch_to.window(next(h for h in drv.window_handles if h != main))
    wait.until(lambda d: "decision-support report" in d.find_element(By.TAG_NAME, "body").text)
    assert drv.current_url.startswith("blob:")
    drv.close()
    drv.switch_to.window(main)

    # the classifier study (a single image): its heatmap overlay, no slice scrolling
    drv.get(server["url"] + "/#/study/" + server["png"]["id"])
    wait.until(lambda d: d.find_element(By.ID, "study-id").text == server["png"]["id"])
    wait.until(lambda d: d.find_element(By.ID, "slice-label").text == "1 / 1")
    assert "heatmap" in drv.find_element(By.ID, "overlay-kind").text
    assert not drv.find_elements(By.CSS_SELECTOR, "#links a.report-link")
    # a CT series (zip of DICOM): window/level presets change the drawn pixels; the Orthanc link is there
    drv.get(server["url"] + "/#/study/" + server["ct"]["id"])
    wait.until(lambda d: d.find_element(By.ID, "study-id").text == server["ct"]["id"])
    wait.until(lambda d: d.find_element(By.ID, "slice-label").text.endswith("/ 4"))
    assert drv.find_element(By.ID, "window-control").is_displayed()
    total = "const c = document.getElementById('image-canvas'); const d = c.getContext('2d')" \
            ".getImageData(0, 0, c.width, c.height).data; let s = 0; for (let i = 0; i < d.length; i += 4) " \
            "s += d[i]; return s;"
    before = drv.execute_script(total)
    from selenium.webdriver.support.ui import Select

    Select(drv.find_element(By.ID, "window")).select_by_value("-600,1500")  # lung
    assert drv.execute_script(total) != before
    scores = drv.find_element(By.ID, "slice-scores")  # per-slice probabilities of the classifier's stack
    assert scores.is_displayed()
    ActionChains(drv).move_to_element_with_offset(scores, scores.size["width"] // 2 - 4, 0).click().perform()
    assert drv.find_element(By.ID, "slice-label").text == "4 / 4"
    link = drv.find_element(By.ID, "orthanc-link").get_attribute("href")
    assert link == "http://127.0.0.1:8042/app/explorer.html#study?uuid=0a1b2c3d-orthanc-study"

    browser_errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert not browser_errors, browser_errors

    # nothing of the upload or the token in the server's log
    text = server["log"].read_text(errors="replace")
    assert "audit request=" in text and TOKEN not in text and "study.nii.gz" not in text
