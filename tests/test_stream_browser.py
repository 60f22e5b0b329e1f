"""The chart stream and the demo stream in a real browser: headless Chromium (driven by
Selenium, the optional `browser` extra; Chromium and chromedriver from the system, e.g.
`apt-get install chromium chromium-driver`) opens http://127.0.0.1:PORT/ and the test reads
the picture's pixels twice: frames arrive and change. Skipped, with the reason, where no
browser is installed."""
import os
import shutil
import threading
import time

import numpy as np
import pytest

from streamkit import free_port

from darknet_py import stream

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install .[browser])")

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="no Chromium and chromedriver here (apt-get install chromium chromium-driver)")

# what the page's first <img> shows: its size, its centre pixel and a hash of all its pixels
PIXELS = """
const img = document.images[0];
if (!img || !img.naturalWidth) return null;
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d');
g.drawImage(img, 0, 0);
const at = (x, y) => Array.from(g.getImageData(x, y, 1, 1).data.slice(0, 3));
const all = g.getImageData(0, 0, c.width, c.height).data;
let sum = 0;
for (let i = 0; i < all.length; i += 4) sum = (sum * 31 + all[i] + 7 * all[i + 1] + 13 * all[i + 2]) % 1000000007;
return {w: c.width, h: c.height, centre: at(c.width >> 1, c.height >> 1), hash: sum};
"""


@pytest.fixture()
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--window-size=1100,1100"):
        opts.add_argument(arg)
    opts.page_load_strategy = "none"  # the stream never finishes loading
    try:
        drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as e:  # a browser that cannot start here is a reason to skip, said
        pytest.skip(f"Chromium does not start here: {str(e).splitlines()[0]}")
    drv.set_page_load_timeout(10)
    drv.set_script_timeout(10)
    yield drv
    drv.quit()


class Pusher(threading.Thread):
    """Calls step(i) every `every` seconds until stopped (bounded by `seconds`)."""

    def __init__(self, step, every=0.1, seconds=20.0):
        super().__init__(daemon=True)
        self.step, self.every, self.seconds = step, every, seconds
        self.stop = threading.Event()

    def run(self):
        end = time.monotonic() + self.seconds
        i = 0
        while not self.stop.is_set() and time.monotonic() < end:
            self.step(i)
            i += 1
            self.stop.wait(self.every)


def _samples(drv, url, n=2, gap=0.8, timeout=10.0):
    """Open url without waiting for the endless page to load; n pixel readings `gap` apart."""
    drv.get(url)
    end = time.monotonic() + timeout
    got = []
    while time.monotonic() < end and len(got) < n:
        try:
            r = drv.execute_script(PIXELS)
        except Exception:
            r = None
        if r:
            if not got or r != got[-1]:
                got.append(r)
            time.sleep(gap)
        else:
            time.sleep(0.1)
    return got


def test_chart_stream_in_chromium(tmp_path, monkeypatch, browser):
    from darknet_py.outputs.chart import TrainChart

    monkeypatch.setenv(stream.HOST_ENV, "127.0.0.1")
    port = free_port()
    chart = TrainChart("t", 100, 20.0, out_dir=tmp_path, mjpeg_port=port, out=open(os.devnull, "w"))
    assert chart.mjpeg is not None
    # the chart as training draws it: the loss falls; each iteration a new point and status line
    p = Pusher(lambda i: chart.update(i % 100, 18.0 * 0.97 ** i, 1.0 - i / 1000))
    p.start()
    try:
        got = _samples(browser, f"http://127.0.0.1:{port}/")
    finally:
        p.stop.set()
        p.join(5)
        chart.close()
    assert len(got) == 2, f"frames seen by Chromium: {got}"
    assert all(g["w"] == 1000 and g["h"] == 1000 for g in got)
    # the status line changes every iteration: the two readings are different pictures
    assert got[0]["hash"] != got[1]["hash"]


def test_demo_stream_in_chromium(monkeypatch, browser):
    from darknet_py.eval.demo import close_streams, open_streams

    monkeypatch.setenv(stream.HOST_ENV, "127.0.0.1")
    port = free_port()
    mjpeg, _, _ = open_streams(mjpeg_port=port, out=open(os.devnull, "w"))
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]  # BGR: red, green, blue in the browser

    def frame(i):
        img = np.zeros((240, 320, 3), np.uint8)
        img[:] = colours[i % 3]
        mjpeg.push(img)

    p = Pusher(frame, every=0.3)
    p.start()
    try:
        got = _samples(browser, f"http://127.0.0.1:{port}/", n=3, gap=0.35)
    finally:
        p.stop.set()
        p.join(5)
        close_streams(mjpeg)
    assert len(got) >= 2, f"frames seen by Chromium: {got}"
    assert all(g["w"] == 320 and g["h"] == 240 for g in got)
    # each reading is one of the solid colours (JPEG quality 40: within 12 of it, measured <= 3)
    rgb = [tuple(reversed(c)) for c in colours]
    seen = []
    for g in got:
        dist = [max(abs(a - b) for a, b in zip(g["centre"], c)) for c in rgb]
        assert min(dist) <= 12, g
        seen.append(int(np.argmin(dist)))
    assert len(set(seen)) >= 2
