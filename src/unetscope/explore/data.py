"""Read-only access to run folders: the runs, their findings and figures, per-variant rows, kept images.

SQLite is opened with ``mode=ro`` (a URI), one connection per query: the explorer takes no lock,
writes nothing, and reads a run that a sweep is still writing (it sees the transactions committed so
far). Images are ``images/RUN/SEED.pt`` files, read without torch (``ptread``); they are turned into
PNG bytes on request and kept in memory only.
"""

from __future__ import annotations

import io
import json
import queue
import sqlite3
import threading
import urllib.parse
from collections import OrderedDict
from pathlib import Path

from ..errors import UnetscopeError
from ..store import StoreError, safe_run_name, variant_id
from .points import EXTRA_STATS, figure_stat, figure_variants
from .ptread import PtFormatError, read_pt

__all__ = ["ExploreError", "RunFolder", "open_folders", "BASELINE", "parse_seeds"]

BASELINE = variant_id({"type": "baseline"})
MAX_SEEDS_FILTER = 100_000
SERVED_SUFFIXES = {".png", ".json"}  # the only files /files/ hands out (figures and their numbers)


class ExploreError(UnetscopeError, ValueError):
    """Run folders that cannot be explored, or a server that cannot start (one line, exit 2)."""


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0-9,15"`` -> [0..9, 15]; None or empty: no filter."""
    if not text:
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            lo, hi = int(a), int(b)
            if hi < lo or hi - lo + len(out) > MAX_SEEDS_FILTER:
                raise ValueError(part)
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    if len(out) > MAX_SEEDS_FILTER:
        raise ValueError("too many seeds")
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _LRU:
    def __init__(self, size: int):
        self.size, self.d, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.d:
                self.d.move_to_end(key)
                return self.d[key]
        return None

    def put(self, key, value):
        with self.lock:
            self.d[key] = value
            self.d.move_to_end(key)
            while len(self.d) > self.size:
                self.d.popitem(last=False)
        return value


class RunFolder:
    """One run folder, read only. ``index`` is its number in the explorer's list (URLs use it)."""

    def __init__(self, path, index: int = 0):
        self.given = str(path)
        self.path = Path(path).resolve()
        self.index = index
        if not self.path.is_dir():
            raise ExploreError(f"{self.given} is not a folder")
        self.db_path = self.path / "results.sqlite"
        if not self.db_path.is_file():
            raise ExploreError(f"{self.given} is not a run folder: it holds no results.sqlite (folders written by "
                               "unetscope sweep, reproduce or shortcut)")
        self._images = _LRU(64)  # seed files: variant id -> (C, H, W) uint8
        self._pngs = _LRU(4096)
        self._stats = _LRU(64)  # (run, filter, database version) -> variant_stats
        self._locks: dict = {}  # per images file, per statistics question: one reader at a time
        self._locks_lock = threading.Lock()
        self._runs = self._read_runs()

    # database ---------------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(str(self.db_path)) + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)

    def query(self, sql: str, args=()) -> list[tuple]:
        try:
            db = self.connect()
            try:
                return db.execute(sql, args).fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise ExploreError(f"{self.db_path} is damaged or not a results database ({e})") from None

    def _read_runs(self) -> list[dict]:
        rows = self.query("SELECT run, experiment, settings, created FROM runs ORDER BY created")
        self.query("SELECT run, seed, variant_id, ssim, psnr FROM results LIMIT 1")  # the table is readable
        runs = []
        for run, exp, settings, created in rows:
            try:
                s = json.loads(settings)
            except ValueError:
                raise ExploreError(f"{self.db_path} is damaged: run {str(run)[:60]!r} has settings that are not JSON") from None
            runs.append(dict(run=str(run), experiment=str(exp), settings=s if isinstance(s, dict) else {}, created=created))
        return runs

    def run(self, name: str) -> dict | None:
        return next((r for r in self._runs if r["run"] == name), None)

    # the index: runs, findings, figures -------------------------------------------------------
    def describe(self) -> dict:
        """Everything the page shows at once for this folder (small: no per-sample rows)."""
        from ..experiments import ORDER

        self._runs = self._read_runs()  # a run added since (a sweep still at work) is shown too
        stats = {}
        for run, key, value in self.query("SELECT run, key, value FROM stats"):
            try:
                stats.setdefault(run, {})[key] = json.loads(value)
            except ValueError:
                stats.setdefault(run, {})[key] = value
        runs = []
        order = sorted(self._runs, key=lambda r: (ORDER.index(r["experiment"]) if r["experiment"] in ORDER else 50,
                                                  r["created"]))
        for r in order:
            runs.append(self._describe_run(r, stats.get(r["run"], {})))
        first = runs[0]["settings"] if runs else {}
        return dict(id=self.index, path=str(self.path), given=self.given, name=self.path.name, runs=runs,
                    model=first.get("model"), sampler=first.get("sampler"))

    def _describe_run(self, r: dict, stats: dict) -> dict:
        run, s = r["run"], r["settings"]
        try:
            safe = safe_run_name(run)
        except StoreError:
            safe = None  # shown (escaped), but no file of it is read
        findings = _read_json(self.path / "findings" / f"{safe}.json") if safe else None
        findings = findings if isinstance(findings, dict) else None
        seeds = s.get("seeds") if isinstance(s.get("seeds"), list) else []
        cond = s.get("cond")
        conds = cond if isinstance(cond, list) else [cond] * len(seeds)
        out = dict(run=run, experiment=r["experiment"], created=r["created"], stats=stats,
                   settings={k: v for k, v in s.items() if k not in ("seeds", "cond")},
                   seeds=seeds, conds=[c if isinstance(c, (int, float, str)) or c is None else json.dumps(c) for c in conds],
                   findings=findings, figures=[], images=self._kept_seeds(safe) if safe else [])
        if findings:
            out["title"] = findings.get("title")
            out["paper"] = findings.get("paper")
        out["figures"] = self._figures(safe, r["experiment"], s.get("params") or {}, findings) if safe else []
        return out

    def _kept_seeds(self, run: str) -> list[int]:
        d = self.path / "images" / run
        if not d.is_dir():
            return []
        seeds = []
        for f in d.glob("*.pt"):
            if f.stem.isdigit():
                seeds.append(int(f.stem))
        return sorted(seeds)

    def _figures(self, run: str, experiment: str, params: dict, findings: dict | None) -> list[dict]:
        listed = []
        for f in (findings or {}).get("figures", []) or []:
            if isinstance(f, dict) and isinstance(f.get("file"), str):
                listed.append((f["file"], str(f.get("caption", ""))))
            elif isinstance(f, str):
                listed.append((f, ""))
        fig_dir = self.path / "figures" / run
        if not listed and fig_dir.is_dir():  # an interrupted run: its figures as found
            listed = [(f"figures/{run}/{p.name}", "") for p in sorted(fig_dir.glob("*.png"))]
        out = []
        for file, caption in listed:
            path = self.resolve(file)
            if path is None:
                continue
            data = _read_json(path.with_suffix(".json"))
            data = data if isinstance(data, dict) and data.get("kind") in ("lines", "heatmap", "histogram") else None
            stem = path.stem
            out.append(dict(stem=stem, file=file, caption=caption, data=data, stat=figure_stat(experiment, stem),
                            variants=figure_variants(experiment, stem, params, data) if data else None))
        return out

    # files ------------------------------------------------------------------------------------
    def resolve(self, rel: str) -> Path | None:
        """A file under this folder named by a relative path (URL-decoded), or None: outside the
        folder (``..``, an absolute path, a link out), not a regular file, or not a figure's PNG/JSON."""
        if not rel or "\x00" in rel or rel.startswith(("/", "\\")):
            return None
        try:
            path = (self.path / rel).resolve()
        except (OSError, ValueError, RuntimeError):
            return None
        if self.path not in path.parents or not path.is_file() or path.suffix.lower() not in SERVED_SUFFIXES:
            return None
        return path

    # rows ---------------------------------------------------------------------------------------
    @staticmethod
    def _filters(cond: str | None, seeds: list[int] | None) -> tuple[str, list]:
        sql, args = "", []
        if cond is not None and cond != "":
            sql += " AND cond = ?"
            args.append(cond)
        if seeds is not None:
            sql += f" AND seed IN ({','.join('?' * len(seeds))})" if seeds else " AND 0"
            args += seeds
        return sql, args

    def variant_stats(self, run: str, cond: str | None = None, seeds: list[int] | None = None) -> dict:
        """Per variant of a run: [n, mean SSIM, sd SSIM, mean PSNR, sd PSNR] over the (filtered) samples;
        for an experiment of ``EXTRA_STATS`` a sixth item, {statistic: [n, mean, sd]}. Kept until the
        database changes (a run still being written is read again)."""
        key = (run, cond, tuple(seeds) if seeds is not None else None, self._version())
        hit = self._stats.get(key)
        if hit is not None:
            return hit
        with self._locks_lock:
            lock = self._locks.setdefault(("stats", *key[:3]), threading.Lock())
        with lock:  # one query per question: the warmer's and the view's wait for each other
            hit = self._stats.get(key)
            return hit if hit is not None else self._stats.put(key, self._variant_stats(run, cond, seeds))

    def _version(self) -> tuple:
        out = []
        for p in (self.db_path, self.db_path.with_name(self.db_path.name + "-wal")):
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def _variant_stats(self, run: str, cond: str | None, seeds: list[int] | None) -> dict:
        f, args = self._filters(cond, seeds)
        rows = self.query("SELECT variant_id, COUNT(ssim), AVG(ssim), AVG(ssim * ssim), AVG(MIN(psnr, 100.0)), "
                          "AVG(MIN(psnr, 100.0) * MIN(psnr, 100.0)) FROM results WHERE run = ?" + f + " GROUP BY variant_id",
                          [run, *args])
        out = {}
        for vid, n, ms, ms2, mp, mp2 in rows:
            out[vid] = [n, ms, _sd(n, ms, ms2), mp, _sd(n, mp, mp2)]
        r = self.run(run)
        names = list(EXTRA_STATS.get(r["experiment"], {})) if r else []
        if names:  # the experiment's own statistics (feature-change: rel_l1, cos), from extra: {name: [n, mean, sd]}
            cols = ", ".join(f"COUNT(json_extract(extra, '$.{k}')), AVG(json_extract(extra, '$.{k}')), "
                             f"AVG(json_extract(extra, '$.{k}') * json_extract(extra, '$.{k}'))" for k in names)
            for vid, *v in self.query(f"SELECT variant_id, {cols} FROM results WHERE run = ?" + f + " GROUP BY variant_id",
                                      [run, *args]):
                x = {k: [v[3 * i], v[3 * i + 1], _sd(*v[3 * i:3 * i + 3])] for i, k in enumerate(names)}
                out.setdefault(vid, [0, None, None, None, None]).append(x)
        return out

    def variant_rows(self, run: str, vid: str, cond: str | None = None, seeds: list[int] | None = None,
                     by: str | None = None) -> dict:
        """The per-sample rows of one variant, worst first, and which seeds kept images of it. Worst:
        the lowest SSIM; ``by`` an ``EXTRA_STATS`` statistic of the run's experiment: the largest change."""
        f, args = self._filters(cond, seeds)
        rows = self.query("SELECT seed, variant, cond, ssim, psnr, extra FROM results WHERE run = ? AND variant_id = ?" + f,
                          [run, vid, *args])
        variant = None
        out = []
        for seed, v, c, s, p, extra in rows:
            if variant is None:
                variant = _loads(v)
            out.append(dict(seed=seed, cond=_loads(c), ssim=s, psnr=_psnr(p), extra=_loads(extra) or {}))
        r = self.run(run)
        larger = EXTRA_STATS.get(r["experiment"] if r else None, {}).get(by)
        if larger is not None:
            def key(x):
                v = x["extra"].get(by) if isinstance(x["extra"], dict) else None
                ok = isinstance(v, (int, float)) and v == v
                return (not ok, (-v if larger else v) if ok else 0.0, x["seed"])
            out.sort(key=key)
        else:
            out.sort(key=lambda r: (r["ssim"] is None, r["ssim"] if r["ssim"] is not None else 0.0, r["seed"]))
        images = {}
        kept_seeds = set(self.kept_seeds(run))
        for r in out:
            if r["seed"] not in kept_seeds:
                continue
            kept = self.kept(run, r["seed"], load=False)
            if kept is None:  # not read yet: the image requests read it (and say in place if it is damaged)
                images[r["seed"]] = dict(baseline=True, variant=True)
            elif isinstance(kept, str):
                images[r["seed"]] = dict(error=kept)
            else:
                images[r["seed"]] = dict(baseline=BASELINE in kept, variant=vid in kept)
        return dict(run=run, variant_id=vid, variant=variant, rows=out, images=images, by=by if larger is not None else "ssim")

    def seed_rows(self, run: str, seed: int) -> dict:
        """All rows of one sample of a run (a trajectory's per-step measurements) and its kept images."""
        rows = self.query("SELECT variant_id, variant, ssim, psnr FROM results WHERE run = ? AND seed = ?", [run, seed])
        kept = self.kept(run, seed)
        return dict(run=run, seed=seed, rows=[dict(variant_id=vid, variant=_loads(v), ssim=s, psnr=_psnr(p))
                                              for vid, v, s, p in rows],
                    images=sorted(kept) if isinstance(kept, set) else [], error=kept if isinstance(kept, str) else None)

    # images -------------------------------------------------------------------------------------
    def kept_seeds(self, run: str) -> list[int]:
        try:
            return self._kept_seeds(safe_run_name(run))
        except StoreError:
            return []

    def _seed_images(self, run: str, seed: int, load: bool = True):
        """A seed's kept images (dict), None where none were kept (or, ``load=False``, not read yet),
        or a string saying why they cannot be read."""
        try:
            f = self.path / "images" / safe_run_name(run) / f"{int(seed):05d}.pt"
            key = (str(f), f.stat().st_mtime_ns)
        except (StoreError, OSError):
            return None
        hit = self._images.get(key)
        if hit is not None or not load:
            return hit
        with self._locks_lock:
            lock = self._locks.setdefault(key[0], threading.Lock())
        with lock:  # one reader per file: the requests for its other images wait for it, not read it again
            hit = self._images.get(key)
            if hit is not None:
                return hit
            try:
                imgs = read_pt(f, lazy=True)  # numpy alone, no torch (seconds); each image read when asked for
            except PtFormatError:  # not the layout unetscope writes: torch's weights-only loader (names the damage)
                from ..sweep import load_images

                try:
                    imgs = load_images(self.path, run, seed)
                except StoreError as e:
                    return self._images.put(key, f"damaged: {e}")
            return self._images.put(key, imgs)

    def kept(self, run: str, seed: int, load: bool = True):
        """The variant ids of a seed's kept images (a set), why they cannot be read (a string), or
        None when ``load=False`` and the file is not read yet."""
        imgs = self._seed_images(run, seed, load)
        if imgs is None:
            return None if not load else set()
        return imgs if isinstance(imgs, str) else set(imgs)

    def warm(self, run: str) -> None:
        """Read a run's statistics and kept images files in the background, its view's request before
        the others: its view and the first click on one of its points then find them in memory."""
        with _WARM_LOCK:
            _WARM_ASKED[0] += 1  # before the put: a reader that sees the count change finds the request queued
        _WARM_QUEUE.put((self, run, None))
        _start_warmer()

    def image_png(self, run: str, seed: int, vid: str, max_side: int = 512) -> bytes | str | None:
        """PNG bytes of a kept image (at most ``max_side`` pixels a side), None if not kept, or why it cannot be read."""
        key = (run, seed, vid, max_side)
        hit = self._pngs.get(key)
        if hit is not None:
            return hit
        imgs = self._seed_images(run, seed)
        if imgs is None or isinstance(imgs, str):
            return imgs
        img = imgs.get(vid)
        if img is None:
            return None
        try:
            data = png_bytes(img, max_side)
        except (TypeError, ValueError) as e:
            return f"damaged: the image of {vid} for seed {seed} cannot be drawn ({e})"
        return self._pngs.put(key, data)


# (folder, run, seeds left or None: not started) to read, the latest asked first: one reader for all
_WARM_QUEUE: queue.LifoQueue = queue.LifoQueue()
_WARM_LOCK = threading.Lock()
_WARM_ASKED = [0]  # views asked for so far: the reader yields only to a request newer than its item
_WARMER: list = []


def _start_warmer() -> None:
    with _WARM_LOCK:
        if _WARMER and _WARMER[0].is_alive():
            return

        def read():
            from PIL import Image  # noqa: F401  (imported here, not by the first image request)

            while True:
                folder, run, seeds = _WARM_QUEUE.get()
                asked = _WARM_ASKED[0]
                if seeds is None:
                    try:
                        folder.variant_stats(run)  # its view's first question, answered before it is asked
                    except ExploreError:
                        pass  # the view's own request says so
                    seeds = folder.kept_seeds(run)[:16]
                for i, seed in enumerate(seeds):
                    if _WARM_ASKED[0] != asked:  # a view opened since: its files first, then the seeds left here
                        # (yielding to any queued item, not only a newer one, made two queued runs hand the
                        # reader to each other forever: a core spent re-reading both runs' statistics)
                        newer = _WARM_QUEUE.get()
                        _WARM_QUEUE.put((folder, run, seeds[i:]))
                        _WARM_QUEUE.put(newer)
                        break
                    folder._seed_images(run, seed)

        _WARMER[:] = [threading.Thread(target=read, name="unetscope-explore-warm", daemon=True)]
        _WARMER[0].start()


def png_bytes(img, max_side: int = 512) -> bytes:
    """A (C, H, W) uint8 tensor -> PNG bytes, shrunk (area average) so its longer side is at most ``max_side``."""
    import numpy as np
    from PIL import Image

    arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise ValueError(f"shape {tuple(arr.shape)} is not (C, H, W)")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(float), 0, 1) * 255).round().astype(np.uint8)
    im = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BOX)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _sd(n, m, m2):
    return (max(m2 - m * m, 0.0) ** 0.5) if n and m is not None else None


def _loads(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _psnr(p):
    return None if p is None else (None if p >= 1e300 else p)  # identical images: stored as 1e300, shown as "inf"


def open_folders(paths) -> list[RunFolder]:
    """The folders to explore, checked: each a readable run folder (a one-line ExploreError if not)."""
    if not paths:
        raise ExploreError("give at least one run folder")
    folders = []
    seen = set()
    for p in paths:
        f = RunFolder(p, len(folders))
        if f.path in seen:
            raise ExploreError(f"{p} is given twice")
        seen.add(f.path)
        folders.append(f)
    return folders
