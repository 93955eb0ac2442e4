"""``unetscope explore DIR --html FILE``: the explorer as one self-contained file that opens from
``file://`` with no server: every sample's numbers, the figures, and a limited set of images
(the worst and best points of each figure and a few between, a few kept seeds, small)."""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path

from .data import BASELINE, ExploreError, RunFolder
from .points import EXTRA_STATS
from .server import asset, index, page_html

__all__ = ["export_html", "POINTS_PER_FIGURE", "SEEDS_PER_POINT", "MAX_SIDE"]

POINTS_PER_FIGURE = 8  # points of a figure whose images are kept: its worst, its best, and evenly spaced others
SEEDS_PER_POINT = 4  # kept seeds per point
MAX_SIDE = 64  # pixels a side at most (larger images are shrunk by area averaging)
TRAJECTORY_STEPS = 25  # steps of the first kept seed's trajectory


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _rows(folder: RunFolder, run: dict) -> dict:
    """Every row of a run, compact: per variant [variant, sample indices, SSIM, PSNR] (and, for an
    experiment of ``EXTRA_STATS``, {statistic: values})."""
    seeds, pos = list(run["seeds"]), {}
    for i, s in enumerate(seeds):
        pos[s] = i
    conds = list(run["conds"])
    variants: dict = {}
    names = list(EXTRA_STATS.get(run["experiment"], {}))  # feature-change: its rel_l1 and cos, per sample
    for seed, vid, variant, ssim, psnr, extra in folder.query(
            "SELECT seed, variant_id, variant, ssim, psnr, " + ("extra" if names else "NULL") + " FROM results WHERE run = ?",
            [run["run"]]):
        if seed not in pos:  # a row of a seed the settings do not list
            pos[seed] = len(seeds)
            seeds.append(seed)
            conds.append(None)
        v = variants.get(vid)
        if v is None:
            try:
                variant = json.loads(variant)
            except ValueError:
                pass
            v = variants[vid] = [variant, [], [], []] + ([{k: [] for k in names}] if names else [])
        v[1].append(pos[seed])
        v[2].append(None if ssim is None else round(ssim, 5))
        v[3].append(None if psnr is None or psnr >= 1e300 else round(psnr, 3))
        if names:
            x = _extra(extra)
            for k in names:
                y = x.get(k)
                v[4][k].append(round(y, 6) if isinstance(y, (int, float)) and math.isfinite(y) else None)
    return dict(seeds=seeds, conds=conds, variants=variants)


def _extra(text) -> dict:
    try:
        x = json.loads(text) if text else {}
    except ValueError:
        return {}
    return x if isinstance(x, dict) else {}


def _picked_points(fig: dict, stats: dict) -> list[str]:
    """The variants of a figure whose images the file keeps: the worst and best point by mean SSIM,
    then evenly spaced others, ``POINTS_PER_FIGURE`` in all."""
    vids = [v for row in (fig.get("variants") or []) for v in row if v and v in stats and stats[v][1] is not None]
    if not vids:
        return []
    ranked = sorted(dict.fromkeys(vids), key=lambda v: stats[v][1])
    out = [ranked[0], ranked[-1]]
    k = max(0, POINTS_PER_FIGURE - 2)
    for i in range(1, k + 1):
        out.append(ranked[round(i * (len(ranked) - 1) / (k + 1))])
    return list(dict.fromkeys(out))


def export_html(folders: list[RunFolder], path) -> dict:
    """Write the explorer of ``folders`` as one file; returns counts of what it holds."""
    path = Path(path)
    for f in folders:
        if f.path == path.resolve().parent or f.path in path.resolve().parents:
            raise ExploreError(f"--html {path} lies inside the run folder {f.given}: the explorer never writes into a "
                               "run folder; give a path outside it")
    if path.exists() and path.is_dir():
        raise ExploreError(f"--html {path} is a folder; give a file name")
    if not path.resolve().parent.is_dir():
        raise ExploreError(f"--html {path}: its folder does not exist")
    idx = index(folders, mode="static")
    rows, images, files = {}, {}, {}
    n_images = n_points = 0
    for folder, fdesc in zip(folders, idx["folders"]):
        for run in fdesc["runs"]:
            key = f"{folder.index}/{run['run']}"
            rows[key] = _rows(folder, run)
            stats = folder.variant_stats(run["run"]) if run["figures"] else {}
            kept = sorted(run["images"])[:SEEDS_PER_POINT]
            want = []
            for fig in run["figures"]:
                if fig["data"] is None:  # image grids and other pictures: the PNG itself
                    p = folder.resolve(fig["file"])
                    if p is not None:
                        files[f"{folder.index}/{fig['file']}"] = _uri(p.read_bytes())
                    continue
                picked = _picked_points(fig, stats)
                n_points += len(picked)
                want += [(s, v) for v in picked for s in kept]
            if run["experiment"] == "trajectory" and kept:
                steps = sorted({v[0]["t"] for v in rows[key]["variants"].values()
                                if isinstance(v[0], dict) and v[0].get("type") in ("x_t", "x_est0")}, reverse=True)
                pick = sorted({steps[round(i * (len(steps) - 1) / max(1, TRAJECTORY_STEPS - 1))]
                               for i in range(min(TRAJECTORY_STEPS, len(steps)))}, reverse=True) if steps else []
                by_t = {(v[0].get("type"), v[0].get("t")): vid for vid, v in rows[key]["variants"].items() if isinstance(v[0], dict)}
                want += [(kept[0], by_t[(k, t)]) for t in pick for k in ("x_t", "x_est0") if (k, t) in by_t]
            want += [(s, BASELINE) for s in {s for s, _ in want}]
            run_images = {}
            for seed, vid in dict.fromkeys(want):
                png = folder.image_png(run["run"], seed, vid, max_side=MAX_SIDE)
                if isinstance(png, bytes):
                    run_images[f"{seed}/{vid}"] = _uri(png)
            if run_images:
                images[key] = run_images
                n_images += len(run_images)
    idx["export"] = (f"a file exported {time.strftime('%Y-%m-%d %H:%M')}: every sample's numbers; images of the worst, "
                     f"the best and up to {POINTS_PER_FIGURE - 2} other points of each figure ({n_images} images), for at most "
                     f"{SEEDS_PER_POINT} kept seeds, at most {MAX_SIDE} px a side")
    data = dict(index=idx, rows=rows, images=images, files=files, baseline=BASELINE)
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    head = f"<style>{asset('explorer.css')}</style>"
    body = (f"<script>window.UNETSCOPE_EXPLORER = {blob};</script>\n"
            f"<script>{asset('explorer.js')}</script>")
    html = page_html(head, body)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise ExploreError(f"cannot write --html {path}: {e.strerror or e}") from None
    return dict(path=path, bytes=len(html.encode()), images=n_images, points=n_points,
                runs=sum(len(f["runs"]) for f in idx["folders"]))
