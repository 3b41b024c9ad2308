"""The search endpoints over HTTP (a real server on 127.0.0.1) and the search page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("faiss")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from effstack.cli.main import main  # noqa: E402

from .helpers import THUMB, near_duplicate, write_photos  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from effstack.search.service import SearchService
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    tmp = tmp_path_factory.mktemp("svc")
    write_photos(tmp / "photos", 16)
    out = tmp / "ix"
    assert main(["index", "build", THUMB, "--images", str(tmp / "photos"), "--out", str(out), "--engine",
                 "torch"]) == 0
    svc = SearchService.open(out, engine="torch")
    app = create_app(ModelRepository({}), ServerOptions(port=0), extensions=[svc])
    with BackgroundServer(app) as srv:
        yield srv.url, tmp, svc


def test_query_by_image_and_by_id(server):
    url, tmp, _ = server
    q = near_duplicate(9, tmp / "q9.jpg").read_bytes()
    r = httpx.post(url + "/search/query?k=4", content=q, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["hits"][0]["id"] == "img009.png" and len(doc["hits"]) == 4
    assert set(doc["hits"][0]) == {"id", "score", "path"} and doc["took_ms"] >= doc["search_ms"]
    r = httpx.get(url + "/search/query", params={"id": "img009.png", "k": 3}).json()
    assert [h["id"] for h in r["hits"]] != [] and all(h["id"] != "img009.png" for h in r["hits"])


def test_add_thumb_remove(server):
    url, tmp, svc = server
    (extra,) = write_photos(tmp / "extra", 1, start=77)
    r = httpx.post(url + "/search/images", params={"id": "new/77"}, content=extra.read_bytes())
    assert r.status_code == 200 and r.json()["count"] == 17
    q = near_duplicate(77, tmp / "q77.jpg").read_bytes()
    assert httpx.post(url + "/search/query?k=1", content=q).json()["hits"][0]["id"] == "new/77"
    t = httpx.get(url + "/search/images/new/77/thumb")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg" and t.content[:3] == b"\xff\xd8\xff"
    assert httpx.delete(url + "/search/images/new/77").json() == {"id": "new/77", "removed": True, "count": 16}
    assert "new/77" not in svc.index


def test_client_mistakes_are_4xx_with_one_line(server):
    url, _, _ = server
    bad = [
        (httpx.post(url + "/search/query", content=b"not an image"), 400, "cannot be read as an image"),
        (httpx.post(url + "/search/query?k=0", content=b"x"), 400, "k must be"),
        (httpx.get(url + "/search/query"), 400, "needs ?id=ID"),
        (httpx.get(url + "/search/query?id=ghost"), 404, "no image with id 'ghost'"),
        (httpx.delete(url + "/search/images/ghost"), 404, "no image with id 'ghost'"),
        (httpx.get(url + "/search/images/ghost/thumb"), 404, "ghost"),
        (httpx.post(url + "/search/images", content=b"x"), 400, "needs ?id=ID"),
        (httpx.post(url + "/search/images?id=a", content=b"junk"), 400, "cannot be read as an image"),
    ]
    for r, status, text in bad:
        assert r.status_code == status and text in r.json()["error"], (r.status_code, r.text)
    assert httpx.get(url + "/search/info").json()["count"] == 16
    assert httpx.get(url + "/v2/health/live").json() == {"live": True}  # the protocol's routes are untouched


# --- the page in a real browser -------------------------------------------------------------------------


def _chromium() -> tuple[str, str]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                              else None)
    if not browser or not driver:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)")
    return browser, driver


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
    binary, driver = _chromium()
    profile = tempfile.mkdtemp(prefix="effstack-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_search_page_shows_the_near_duplicate_first(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, tmp, _ = server
    query = near_duplicate(3, Path(tmp) / "upload3.jpg")
    browser.get(url + "/search")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "images" in d.find_element(By.ID, "meta").text)
    browser.find_element(By.ID, "file").send_keys(str(query))
    wait.until(ec.presence_of_element_located((By.ID, "took")))
    hits = browser.find_elements(By.CSS_SELECTOR, "#results .hit")
    assert hits and hits[0].get_attribute("data-id") == "img003.png"
    assert "results in" in browser.find_element(By.ID, "took").text
    first_img = hits[0].find_element(By.TAG_NAME, "img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", first_img))
    clicked = hits[1].get_attribute("data-id")
    hits[1].click()  # search by that stored image's id: new results, without the image itself
    wait.until(ec.staleness_of(hits[0]))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit"))
    ids = [h.get_attribute("data-id") for h in browser.find_elements(By.CSS_SELECTOR, "#results .hit")]
    assert ids and clicked not in ids
