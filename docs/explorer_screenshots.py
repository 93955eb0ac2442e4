"""The screenshots of docs/explorer.md, taken in headless Chromium on the bundled model's runs.

    python docs/explorer_screenshots.py [--out docs/figures] [--feature-change DIR]

Views: a run's figures with a heatmap cell clicked (results/default-full), a point hovered, the
trajectory slider, a shortcut run (results/search-default-mean90, the bundled model's searched
schedule), compare mode (results/default-full against results/mnist-s100, the other bundled model); or,
with ``--feature-change DIR``, only a feature-change run (``unetscope sweep feature-change --model default
--steps 50 --samples 8 --out DIR``, about 10 s) with a cell hovered and another clicked.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from explore_latency import browser, wait  # noqa: E402

import unetscope as us  # noqa: E402


def _view(d, url, ready):
    d.get(url)
    wait(d, "document.body.getAttribute('data-ready') === '1'")
    wait(d, ready)
    time.sleep(0.4)


def _images_loaded(d, sel):
    wait(d, f"document.querySelectorAll('{sel} img').length > 0 && Array.from(document.querySelectorAll('{sel} img'))"
            ".every(i => i.complete && i.naturalWidth > 0)")


def _shot(d, path, height):
    d.set_window_size(1360, height)
    time.sleep(0.3)
    d.save_screenshot(str(path))
    print("wrote", path)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    p.add_argument("--feature-change", default=None, metavar="DIR", help="a feature-change run folder to show")
    a = p.parse_args()
    if a.feature_change:  # that view only
        return feature_change(a.feature_change, Path(a.out))
    out = Path(a.out)
    res = ROOT / "results"
    ex = us.explore([res / "default-full", res / "mnist-s100", res / "search-default-mean90"], port=0, browser=False,
                    block=False, log=lambda *x: None)
    d = browser("/usr/bin/chromium", "/usr/bin/chromedriver")
    try:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        # a run: the heatmap, a cell clicked, the images of its samples worst first
        _view(d, ex.url + "#f=0&run=block-utility-1997dca00c", "document.querySelector('rect.cell') !== null")
        d.execute_script("document.querySelector('[data-stem=block_utility_heatmap] rect.cell[data-row=\"10\"][data-col=\"20\"]')"
                         ".dispatchEvent(new MouseEvent('click'))")
        _images_loaded(d, ".detail .pairs")
        d.execute_script("document.querySelector('[data-stem=block_utility_heatmap]').scrollIntoView()")
        _shot(d, out / "explorer-run.png", 1000)
        # a point hovered: mean, sd, n
        d.set_window_size(1360, 900)
        _view(d, ex.url + "#f=0&run=phases-97f1723641", "document.querySelector('circle.pt') !== null")
        pt = d.find_element(By.CSS_SELECTOR, "[data-stem=phases_ssim] circle.pt[data-x=\"60\"][data-series=\"1\"]")
        ActionChains(d).move_to_element(pt).perform()
        wait(d, "!document.getElementById('tip').hidden")
        _shot(d, out / "explorer-hover.png", 760)
        # the trajectory: x_t and x_est0 at a chosen t
        _view(d, ex.url + "#f=0&run=trajectory-e39ee02f63", "document.querySelectorAll('#trajectory img').length === 3")
        d.execute_script("var s = document.getElementById('traj-t'); s.value = 62; s.dispatchEvent(new Event('input'))")
        _images_loaded(d, "#trajectory")
        d.set_window_size(1360, 900)
        d.find_element(By.ID, "trajectory").screenshot(str(out / "explorer-trajectory.png"))
        print("wrote", out / "explorer-trajectory.png")
        # a shortcut run: savings, the schedule over t, the histogram with a bar clicked
        _view(d, ex.url + "#f=2&run=shortcut-3157395e98", "document.querySelector('rect.bar') !== null")
        d.execute_script("var b = document.querySelectorAll('rect.bar'); b[b.length - 2].dispatchEvent(new MouseEvent('click'))")
        wait(d, "document.querySelector('.detail table.rows') !== null")
        d.execute_script("window.scrollTo(0, 0)")
        _shot(d, out / "explorer-shortcut.png", 1150)
    finally:
        d.quit()
        ex.close()
    # compare: the two bundled models on the same axes, the differences named
    ex = us.explore([res / "default-full", res / "mnist-s100"], port=0, browser=False, block=False, log=lambda *x: None)
    d = browser("/usr/bin/chromium", "/usr/bin/chromedriver")
    try:
        d.set_window_size(1360, 2400)
        _view(d, ex.url + "#compare", "document.querySelector('[data-experiment=phases] path.curve') !== null")
        d.find_element(By.CSS_SELECTOR, "[data-experiment=phases]").screenshot(str(out / "explorer-compare.png"))
        print("wrote", out / "explorer-compare.png")
    finally:
        d.quit()
        ex.close()


def feature_change(folder, out: Path) -> None:
    """The heatmap of each unit's change over t: a cell clicked (its samples, largest change first, no
    images) and another hovered (mean, sd, n)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ex = us.explore([folder], port=0, browser=False, block=False, log=lambda *x: None)
    d = browser("/usr/bin/chromium", "/usr/bin/chromedriver")
    try:
        d.set_window_size(1360, 1300)
        _view(d, ex.url, "document.querySelector('[data-stem=feature_change_heatmap] rect.cell') !== null")
        cell = "[data-stem=feature_change_heatmap] rect.cell[data-row=\"{}\"][data-col=\"{}\"]"
        d.execute_script(f"document.querySelector('{cell.format('D[0]', 25)}').dispatchEvent(new MouseEvent('click'))")
        wait(d, "document.querySelector('.detail table.rows') !== null")
        d.execute_script("document.querySelector('[data-stem=feature_change_heatmap]').scrollIntoView()")
        ActionChains(d).move_to_element(d.find_element(By.CSS_SELECTOR, cell.format("E[0]", 40))).perform()
        wait(d, "!document.getElementById('tip').hidden")
        _shot(d, out / "explorer-feature-change.png", 1300)
    finally:
        d.quit()
        ex.close()


if __name__ == "__main__":
    main()
