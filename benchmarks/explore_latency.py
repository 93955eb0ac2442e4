"""Explorer latency in a real (headless) Chromium: from the command to a usable page, and from a click
on a heatmap cell to its images, on a run folder (default: results/default-full; goals: page under
2 s, click under 0.5 s).

    python benchmarks/explore_latency.py [DIR ...] [--clicks 12] [--dwell 0] [--chromium /usr/bin/chromium]

The browser is started first and not counted. "page": ``unetscope explore DIR --no-browser --port 0``
is started, its printed address loaded, until the page has drawn its first run's figures (the
process's Python start and imports included; the part before the address is printed separately).
"click": a heatmap cell is clicked (a ``click`` event) until every image of its samples has loaded,
timed inside the page with ``performance.now()``; the first click (at once: the run's images files
maybe still being read; ``--dwell S``: after S seconds on the view) and the rest (median and max,
each a new cell) are reported apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CLICK_JS = """
var vid = arguments[0], done = arguments[arguments.length - 1], t0 = performance.now();
document.querySelector('rect.cell[data-vid="' + vid + '"]').dispatchEvent(new MouseEvent('click'));
(function poll() {
  var imgs = document.querySelectorAll('.detail .pairs[data-vid="' + vid + '"] img');
  if (imgs.length && Array.prototype.every.call(imgs, function (i) { return i.complete && i.naturalWidth > 0; }))
    return done([performance.now() - t0, imgs.length]);
  if (performance.now() - t0 > 20000) return done([null, imgs.length]);
  setTimeout(poll, 2);
})();
"""


def browser(chromium: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,900"):
        o.add_argument(a)
    o.binary_location = chromium
    d = webdriver.Chrome(service=Service(driver), options=o)
    d.set_script_timeout(30)
    return d


def wait(d, js: str, timeout: float = 60) -> None:
    t_end = time.time() + timeout
    while not d.execute_script("return " + js):
        if time.time() > t_end:
            raise TimeoutError(js)
        time.sleep(0.005)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", default=[str(ROOT / "results" / "default-full")])
    p.add_argument("--clicks", type=int, default=12, help="heatmap cells clicked after the first")
    p.add_argument("--dwell", type=float, default=0.0,
                   help="seconds on the heatmap's view before the first click (0: at once, the images file maybe not read)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = p.parse_args()
    d = browser(a.chromium, a.chromedriver)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "unetscope.cli", "explore", *a.dirs, "--no-browser", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        t_addr = time.perf_counter()
        if "http://" not in line:
            raise SystemExit(f"the explorer did not start: {line}{proc.stderr.read()}")
        url = line[line.index("http://"):].split()[0]
        d.get(url)
        wait(d, "document.body.getAttribute('data-ready') === '1' && document.querySelector('svg.chart') !== null")
        t_page = time.perf_counter()
        print(f"page: {t_page - t0:.2f} s from the command to a usable page ({t_addr - t0:.2f} s to the printed address: "
              f"Python start and imports; {t_page - t_addr:.2f} s to load and draw)")
        run = d.execute_script("""var F = null; return Array.from(document.querySelectorAll('#nav button[data-run]'))
            .map(b => b.getAttribute('data-run')).filter(r => r.indexOf('block-utility') === 0)[0] || null""")
        if run is None:
            print("no block-utility run (no heatmap) in these folders: click latency not measured")
            return
        d.execute_script("location.hash = '#f=0&run=' + encodeURIComponent(arguments[0])", run)
        wait(d, "document.querySelectorAll('[data-stem=block_utility_heatmap] rect.cell[data-vid]').length > 0")
        vids = d.execute_script("return Array.from(document.querySelectorAll('[data-stem=block_utility_heatmap] rect.cell[data-vid]'))"
                                ".map(r => r.getAttribute('data-vid'))")
        time.sleep(a.dwell)
        step = max(1, len(vids) // (a.clicks + 1))
        picks = vids[::step][:a.clicks + 1]
        times = []
        for vid in picks:
            ms, n = d.execute_async_script(CLICK_JS, vid)
            if ms is None:
                raise SystemExit(f"the images of {vid} did not load in 20 s ({n} shown)")
            times.append(ms / 1000)
        rest = times[1:]
        print(f"click: first {times[0]:.3f} s ({n} images; {a.dwell:g} s on the view before it); then median {statistics.median(rest):.3f} s, "
              f"max {max(rest):.3f} s over {len(rest)} other cells (from the click to every image loaded)")
    finally:
        proc.terminate()
        proc.wait(10)
        d.quit()


if __name__ == "__main__":
    main()
