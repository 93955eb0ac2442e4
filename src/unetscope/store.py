"""The results database of a run directory: ``DIR/results.sqlite``, one row per sample x variant.

A *variant* is a plan (its canonical JSON) or a per-step measurement (``{"type": "x_est0", "t": 40}``).
Rows are written in transactions, chunk by chunk, so an interrupted sweep resumes where it stopped
and loses nothing. Exports to CSV and Parquet.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

from .errors import UnetscopeError

__all__ = ["ResultStore", "variant_id", "StoreError", "folder_lock", "safe_run_name", "run_dir", "strict_json", "write_atomic"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,        -- experiment name + hash of its settings
    experiment TEXT NOT NULL,
    settings TEXT NOT NULL,      -- JSON: model, sampler, grid parameters, seeds
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL REFERENCES runs(run),
    seed INTEGER NOT NULL,
    variant_id TEXT NOT NULL,
    variant TEXT NOT NULL,       -- canonical JSON of the plan or the per-step measurement
    cond TEXT,                   -- JSON of the sample's condition (class label or prompt)
    ssim REAL,
    psnr REAL,
    extra TEXT,                  -- JSON: other metrics (evaluations, units run, ...)
    PRIMARY KEY (run, seed, variant_id)
);
CREATE TABLE IF NOT EXISTS stats (
    run TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run, key)
);
"""


class StoreError(UnetscopeError, RuntimeError):
    """A results database that cannot be used as asked."""


_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def safe_run_name(run) -> str:
    """A run name used in file paths: letters, digits, ``-``, ``_`` and ``.``, not starting with a
    dot (so never ``..``), at most 128 characters, whatever the database says."""
    if not isinstance(run, str) or not run or len(run) > 128 or run.startswith(".") or not set(run) <= _SAFE:
        raise StoreError(f"results.sqlite holds a run named {str(run)[:80]!r}, which is not a safe folder name "
                         "(letters, digits, - _ .): the database was edited or is corrupt")
    return run


def run_dir(out_dir, kind: str, run: str) -> Path:
    """``out_dir/kind/run``, checked to lie inside ``out_dir``."""
    base = Path(out_dir).resolve()
    path = (base / kind / safe_run_name(run)).resolve()
    if base not in path.parents:
        raise StoreError(f"run {run!r} would write outside {out_dir}")
    return path


def strict_json(obj) -> str:
    """JSON that strict readers accept: non-finite numbers (an identical image's PSNR) become null."""
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
            return clean(v.item())
        return v

    return json.dumps(clean(obj), indent=2, allow_nan=False, default=float) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def variant_id(variant: dict) -> str:
    return hashlib.sha1(canonical(variant).encode()).hexdigest()[:16]


_HELD: dict[str, list] = {}  # lock files this process holds: path -> [file, depth] (re-entrant)


@contextlib.contextmanager
def folder_lock(out_dir):
    """One writer per run folder: a second process on the same folder is refused at once with a
    message (it would compute the same chunks again and race on the same files). The lock is an
    ``flock`` on ``DIR/.unetscope.lock``, released when the process ends, even by a kill."""
    import fcntl

    path = str((Path(out_dir) / ".unetscope.lock").resolve())
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    try:
        f = open(path, "a+")
    except OSError as e:
        raise StoreError(f"cannot write to {out_dir}: {e.strerror}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise StoreError(f"{out_dir} is in use by another unetscope process ({who}); wait for it to finish, "
                         "or give another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    _HELD[path] = [f, 1]
    try:
        yield
    finally:
        _HELD.pop(path)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _db_errors(fn):
    """A damaged database file is a StoreError naming it, not a traceback."""
    @functools.wraps(fn)
    def call(self, *a, **k):
        try:
            return fn(self, *a, **k)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is damaged or not a results database ({e}); restore it or use a new --out") from None
    return call


class ResultStore:
    """One SQLite file; safe to reopen after a crash (SQLite's journal keeps it consistent)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a usable results database: {e}") from None
        except OSError as e:
            raise StoreError(f"cannot write to {self.path.parent}: {e.strerror}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # runs ------------------------------------------------------------------------------------
    @staticmethod
    def run_name(experiment: str, settings: dict) -> str:
        """A run's name: the experiment and a hash of its settings (the same settings, the same run)."""
        return f"{experiment}-{variant_id(settings)[:10]}"

    @_db_errors
    def register_run(self, experiment: str, settings: dict) -> str:
        run = self.run_name(experiment, settings)
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?)", (run, experiment, canonical(settings), time.time()))
        return run

    @_db_errors
    def runs(self, experiment: str | None = None) -> list[dict]:
        q = "SELECT run, experiment, settings, created FROM runs" + (" WHERE experiment = ?" if experiment else "") + " ORDER BY created"
        return [dict(run=r, experiment=e, settings=json.loads(s), created=c)
                for r, e, s, c in self.db.execute(q, (experiment,) if experiment else ())]

    # rows ------------------------------------------------------------------------------------
    @_db_errors
    def done(self, run: str) -> set[tuple[int, str]]:
        """(seed, variant_id) pairs already stored for a run."""
        return set(self.db.execute("SELECT seed, variant_id FROM results WHERE run = ?", (run,)))

    @_db_errors
    def write(self, run: str, rows: list[dict], stats: dict | None = None) -> None:
        """Write rows, and the run's ``stats`` that count them, in one transaction (all or nothing)."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run, int(r["seed"]), variant_id(r["variant"]), canonical(r["variant"]), canonical(r.get("cond")),
                  _num(r.get("ssim")), _num(r.get("psnr")), canonical(r.get("extra") or {})) for r in rows])
            self.db.executemany("INSERT OR REPLACE INTO stats VALUES (?, ?, ?)",
                                [(run, k, canonical(v)) for k, v in (stats or {}).items()])

    @_db_errors
    def set_stat(self, run: str, key: str, value) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO stats VALUES (?, ?, ?)", (run, key, canonical(value)))

    @_db_errors
    def stats(self, run: str) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM stats WHERE run = ?", (run,))}

    @_db_errors
    def rows(self, run: str | None = None) -> list[dict]:
        q = "SELECT run, seed, variant, cond, ssim, psnr, extra FROM results"
        args: tuple = ()
        if run:
            q, args = q + " WHERE run = ?", (run,)
        out = []
        for r, seed, variant, cond, s, p, extra in self.db.execute(q + " ORDER BY run, variant_id, seed", args):
            out.append(dict(run=r, seed=seed, variant=json.loads(variant), cond=json.loads(cond) if cond else None,
                            ssim=s, psnr=_psnr_out(p), extra=json.loads(extra) if extra else {}))
        return out

    # exports ---------------------------------------------------------------------------------
    def _flat(self, run=None) -> list[dict]:
        flat = []
        for r in self.rows(run):
            flat.append(dict(run=r["run"], seed=r["seed"], variant=canonical(r["variant"]), cond=canonical(r["cond"]),
                             ssim=r["ssim"], psnr=r["psnr"], **{f"extra_{k}": v for k, v in r["extra"].items()}))
        return flat

    @_db_errors
    def export_csv(self, path: str | Path, run: str | None = None) -> Path:
        flat = self._flat(run)
        main = ["run", "seed", "variant", "cond", "ssim", "psnr"]
        keys = main + sorted({k for r in flat for k in r} - set(main))
        path = Path(path)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(flat)
        return path

    @_db_errors
    def export_parquet(self, path: str | Path, run: str | None = None) -> Path:
        try:
            import pandas as pd
        except ImportError:
            raise StoreError("Parquet export needs pandas and pyarrow: pip install pandas pyarrow") from None
        try:
            pd.DataFrame(self._flat(run)).to_parquet(path, index=False)
        except ImportError as e:
            raise StoreError(f"Parquet export needs a Parquet engine: pip install pyarrow ({e})") from None
        return Path(path)


_INF = 1e300  # SQLite has no infinity literal in JSON exports; PSNR of identical images is stored as this


def _num(v):
    if v is None:
        return None
    v = float(v)
    return _INF if v == float("inf") else v


def _psnr_out(v):
    return float("inf") if v is not None and v >= _INF else v
