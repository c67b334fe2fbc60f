"""Each model's all-layer sweep over every unit (fold x seed), computed once and reused by every study that needs it.

The ``layer-sweep`` preset scores it; ``fusion-methods`` and ``multi-model`` fuse the layers it chooses. Both
read it from a small store beside the model's train cache (``<train cache>/sweeps/<key>.json``), keyed by the
sha256 of everything the result depends on: the train, test and validation caches (their key, texts and labels hashes),
the head settings a sweep reads, the data settings (split, folds, standardisation), the seeds, the probe and race
settings (``studies.trials.racing``; with ``study.race=false`` the key is the unraced one) and the store's format. A
setting that changes the result changes the key; re-extracting the cache replaces its folder and so the store.
Concurrent workers serialise on a file lock per key, so a sweep is computed once. A raced sweep keeps its progress
after each round of folds in ``<key>.rounds.json`` (removed once the sweep is stored), so a sweep stopped by Ctrl-C,
SIGTERM or a crash resumes after its last finished round: a deep model's sweep on a CPU takes hours.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from benchmark.core.cache import FeatureCache, atomic_write_bytes
from benchmark.core.config import BenchConfig
from benchmark.core.faults import NO_WRITE
from benchmark.core.study_data import ModelDirs
from lightning_modules.fit import RoundLog, SweepProgress, sweep_units
from lightning_modules.scores import LayerScore
from studies.run.fingerprint import data_settings
from studies.trials.racing import sweep_screen

log = logging.getLogger(__name__)

STORE_FORMAT = 3  # bump when the sweep's results change for the same settings (a code change), so old entries miss
SWEEP_NEUTRAL = ("threads", "fusion", "proj_dim", "moe_experts")  # train settings a single-layer sweep does not read
RACE_SETTINGS = ("race_burn_in", "race_z", "probe_z", "probe_margin")  # study settings a raced sweep reads


@dataclass(frozen=True)
class UnitSweep:
    """A model's sweep: ``scores[u][i]`` is unit ``u``'s head on the i-th layer; ``fit_s`` the wall seconds it took."""

    scores: list[list[LayerScore]]
    fit_s: float


def sweep_key(d: ModelDirs, cfg: BenchConfig) -> str:
    """Hash of everything a model's unit sweep depends on (see the module docstring)."""
    caches = {
        split: {
            **{k: FeatureCache(path).meta.get(k) for k in ("key_sha256", "texts_sha256")},
            "labels_sha256": hashlib.sha256((path / "labels.npy").read_bytes()).hexdigest(),
        }
        for split, path in (("train", d.train), ("test", d.test), ("val", d.val))
        if path is not None
    }
    blob = {
        "format": STORE_FORMAT,
        "caches": caches,
        "train": {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in SWEEP_NEUTRAL},
        "data": {k: v for k, v in data_settings(cfg.data).items() if k not in ("num_workers",)},
        "seeds": cfg.study.seeds,
    }
    if cfg.study.race:  # without racing the result is the full grid's, stored under the key it always had
        blob["race"] = {k: getattr(cfg.study, k) for k in RACE_SETTINGS}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _load(path: Path) -> UnitSweep:
    stored = json.loads(path.read_text())
    log.info("reusing the stored sweep of %s (%s)", path.parent.parent, path.name[:12])
    return UnitSweep([[LayerScore.from_json(s) for s in unit] for unit in stored["scores"]], stored["fit_s"])


def _write(path: Path, data: object) -> None:
    atomic_write_bytes(path, json.dumps(data).encode())  # readers see the whole file or none


def _progress_json(p: SweepProgress, fit_s: float) -> dict[str, object]:
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "heads"}
    return {**fields, "heads": [[u, li, s.to_json()] for (u, li), s in p.heads.items()], "fit_s": fit_s}


def _progress(data: dict[str, object]) -> tuple[SweepProgress, float]:
    heads = {(int(u), int(li)): LayerScore.from_json(s) for u, li, s in data.pop("heads")}  # type: ignore[attr-defined]
    fit_s = float(data.pop("fit_s"))  # type: ignore[arg-type]
    return SweepProgress(**data, heads=heads), fit_s  # type: ignore[arg-type]


class _Rounds:
    """The ``RoundLog`` of one sweep key: its progress file, and the wall seconds of the sittings before this one."""

    def __init__(self, path: Path) -> None:
        self.path, self.fit_s_before, self.start = path, 0.0, time.perf_counter()

    def load(self) -> SweepProgress | None:
        try:
            progress, self.fit_s_before = _progress(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as err:  # unreadable: the sweep starts afresh
            log.warning("ignoring the sweep progress %s (%s): the sweep starts from its first round", self.path, err)
            return None
        return progress

    def save(self, progress: SweepProgress) -> None:
        try:
            _write(self.path, _progress_json(progress, self.fit_s()))
        except OSError as err:  # a full or read-only disk costs the resume point, not the sweep
            log.warning("could not keep the sweep's progress in %s (%s): an interrupted sweep restarts", self.path, err)

    def fit_s(self) -> float:
        return self.fit_s_before + time.perf_counter() - self.start


def _compute(d: ModelDirs, cfg: BenchConfig, rounds: _Rounds | None = None) -> UnitSweep:
    start = time.perf_counter()
    screen = sweep_screen(cfg, d)
    log_ = RoundLog(rounds.load, rounds.save) if rounds is not None and screen is not None else None
    scores = sweep_units(d.train, d.test, cfg, cfg.study.seeds, val_dir=d.val, screen=screen, rounds_log=log_)
    return UnitSweep(scores, rounds.fit_s() if rounds is not None else time.perf_counter() - start)


def unit_sweep(d: ModelDirs, cfg: BenchConfig) -> UnitSweep:
    """The model's sweep over every layer and unit (``data.cv_folds`` x ``study.seeds``): stored or computed.

    A stored sweep is read without a lock or any write, so a read-only cache serves it; a sweep that a read-only
    cache cannot store is computed and used without storing (with a warning: the next study computes it again).
    """
    path = d.train / "sweeps" / f"{sweep_key(d, cfg)}.json"
    if path.is_file():  # written whole by os.replace: no lock needed to read it
        return _load(path)
    try:
        path.parent.mkdir(exist_ok=True)
        lock = path.with_suffix(".lock").open("w")
    except OSError as err:
        if err.errno not in NO_WRITE:
            raise
        log.warning("the cache %s is read-only: computing the layer sweep without storing it (%s)", d.train, err)
        return _compute(d, cfg)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker computing the same sweep: wait for it, then read it
        if path.is_file():
            return _load(path)
        rounds = _Rounds(path.with_suffix(".rounds.json"))
        result = _compute(d, cfg, rounds)
        _write(path, {"scores": [[s.to_json() for s in unit] for unit in result.scores], "fit_s": result.fit_s})
        rounds.path.unlink(missing_ok=True)
        return result
