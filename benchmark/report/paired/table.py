"""Best fusion vs best single model (and both vs TF-IDF) per dataset: a paired t-test over units, McNemar per unit.

A unit is one (fold, seed) fit (``lightning_modules.folds``): its test accuracy is step ``u = fold * seeds + seed``
of ``seed/test_acc`` and its test predictions ``predictions/test_pred_seed<u>.npy``. Pairs are the same unit on
both sides: the same fold of the same folds of train (equal fold counts, and where both runs hold their
``config.yaml``, equal ``data.cv_folds``, ``split_seed``, ``val_fraction`` / ``val_split``) and the same seed
(``train.seed + k``); runs whose units differ are not paired, with a note saying why. McNemar compares the two
runs' test predictions against the true test labels, which the study's parent run holds
(``predictions/test_labels.npy``). Where both runs have a refit on all training rows (a study refits its choice),
``refit`` holds the same tests on the refits, seed against seed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.config import BenchConfig
from benchmark.core.tracking import CONFIG_ARTIFACT, PRED_ARTIFACT, TEST_LABELS_ARTIFACT
from benchmark.report.baseline.table import baseline_label, best_baseline
from benchmark.report.common.labels import config_label
from benchmark.report.common.rows import best_single, choose
from benchmark.report.common.stats import mcnemar_exact, paired_t

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from benchmark.report.common.runs import ReportData

log = logging.getLogger(__name__)

Pair = tuple[int, int, int, int]  # fold, seed offset k, step u of run a, step u of run b


@dataclass(frozen=True)
class RunUnits:
    """A run's units: ``steps`` maps (fold, seed offset) to its step ``u``; ``fits`` says which fits they are.

    ``fits`` holds what makes fold f and seed k the same fits in another run (``data`` settings that cut train
    into folds, and ``train.seed``), read from the run's ``config.yaml``; None for a run without one.
    """

    steps: dict[tuple[int, int], int]
    folds: int
    fits: dict[str, Any] | None


def run_units(data: ReportData, row: pd.Series) -> RunUnits:
    """The units of the run in trial row ``row`` (``seeds`` per fold; steps of its ``seed/test_acc``)."""
    import yaml

    steps = sorted(data.history(row["run_id"], tracking.SEED_TEST_ACC))
    seeds = max(int(row["seeds"]), 1)
    folds = max(math.ceil(len(steps) / seeds), 1)
    blob = data.artifact(row["run_id"], CONFIG_ARTIFACT)
    fits = None
    if blob is not None:
        tree = yaml.safe_load(blob) or {}
        d, defaults = tree.get("data") or {}, BenchConfig()
        cv_folds = int(d.get("cv_folds", defaults.data.cv_folds) or 0)
        fits = {
            "data.cv_folds": cv_folds if cv_folds >= 2 else 0,
            "data.split_seed": d.get("split_seed", defaults.data.split_seed),
            "data.val_split": d.get("val_split", defaults.data.val_split),
            "train.seed": (tree.get("train") or {}).get("seed", defaults.train.seed),
        }
        if cv_folds < 2:  # the single split's share; folds do not read it
            fits["data.val_fraction"] = d.get("val_fraction", defaults.data.val_fraction)
    return RunUnits({divmod(u, seeds): u for u in steps}, folds, fits)


def unit_pairs(data: ReportData, a: pd.Series, b: pd.Series) -> tuple[list[Pair], int, str]:
    """The units runs ``a`` and ``b`` share, their number of folds, and why none are paired (empty when some are)."""
    ua, ub = run_units(data, a), run_units(data, b)
    if ua.folds != ub.folds:
        return [], ua.folds, f"the runs have different units ({ua.folds} vs {ub.folds} folds of train)"
    if ua.fits is not None and ub.fits is not None and ua.fits != ub.fits:
        differ = ", ".join(f"{k} {ua.fits.get(k)} vs {ub.fits.get(k)}" for k in ua.fits if ua.fits[k] != ub.fits.get(k))
        return [], ua.folds, f"the runs' units are different fits ({differ})"
    common = sorted(set(ua.steps) & set(ub.steps))
    return [(f, k, ua.steps[f, k], ub.steps[f, k]) for f, k in common], ua.folds, ""


def _labels(data: ReportData, rows: list[pd.Series]) -> np.ndarray | None:
    for parent in dict.fromkeys(r["parent_id"] for r in rows if r["parent_id"]):
        labels = data.array(parent, TEST_LABELS_ARTIFACT)
        if labels is not None:
            return labels
    return None


def _mcnemar(
    data: ReportData, fused: pd.Series, single: pd.Series, pairs: list[Pair]
) -> tuple[list[dict[str, Any]], str]:
    """McNemar per common unit, and why it was skipped (empty when it ran)."""
    labels = _labels(data, [fused, single])
    if labels is None:
        return [], f"no {TEST_LABELS_ARTIFACT} on the parent study runs"
    out = []
    for fold, seed, ua, ub in pairs:
        pa = data.array(fused["run_id"], PRED_ARTIFACT.format(seed=ua))
        pb = data.array(single["run_id"], PRED_ARTIFACT.format(seed=ub))
        if pa is None or pb is None:
            continue
        if not len(pa) == len(pb) == len(labels):
            log.warning(
                "report: fold %d seed %d predictions (%d, %d) and labels (%d) differ in length; McNemar skipped",
                fold,
                seed,
                len(pa),
                len(pb),
                len(labels),
            )
            continue
        out.append({"fold": fold, "seed": seed, "n": len(labels), **asdict(mcnemar_exact(pa == labels, pb == labels))})
    if out:
        return out, ""
    if single["sweep_model"]:
        return [], "the best single model comes from a layer sweep, which logs no test predictions"
    return [], f"no {PRED_ARTIFACT.format(seed='<u>')} of both runs for a common unit"


def refit_pair(data: ReportData, a: pd.Series, b: pd.Series) -> dict[str, Any] | None:
    """The same tests on the two runs' refits on all training rows (the studies' results), paired by seed.

    Both refits train seed k with ``train.seed + k`` on every training row, so seed k pairs with seed k; the
    refits log test predictions of every seed (a layer sweep's trial does not). None unless both have a refit.
    """
    ra, rb = data.refits.get(a["run_id"]), data.refits.get(b["run_id"])
    if ra is None or rb is None:
        return None
    ha, hb = data.history(ra["run_id"], tracking.SEED_TEST_ACC), data.history(rb["run_id"], tracking.SEED_TEST_ACC)
    seeds = sorted(set(ha) & set(hb))
    labels = _labels(data, [a, b])
    mcnemar = []
    for seed in seeds:
        pa = data.array(ra["run_id"], PRED_ARTIFACT.format(seed=seed))
        pb = data.array(rb["run_id"], PRED_ARTIFACT.format(seed=seed))
        if labels is not None and pa is not None and pb is not None and len(pa) == len(pb) == len(labels):
            mcnemar.append(
                {"fold": 0, "seed": seed, "n": len(labels), **asdict(mcnemar_exact(pa == labels, pb == labels))}
            )
    return {
        "a_test_acc": float(ra["test_acc"]),
        "b_test_acc": float(rb["test_acc"]),
        "seeds": seeds,
        "paired_t": asdict(paired_t([ha[k] for k in seeds], [hb[k] for k in seeds])) if len(seeds) >= 2 else None,
        "mcnemar": mcnemar,
    }


def _pair(data: ReportData, a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """Paired t-test over the common units and McNemar per common unit of runs ``a`` and ``b``, with notes on gaps."""
    pairs, folds, why_not = unit_pairs(data, a, b)
    ha, hb = data.history(a["run_id"], tracking.SEED_TEST_ACC), data.history(b["run_id"], tracking.SEED_TEST_ACC)
    notes = [f"not paired: {why_not}"] if why_not else []
    test = None
    if len(pairs) >= 2:
        test = asdict(paired_t([ha[p[2]] for p in pairs], [hb[p[3]] for p in pairs]))
    elif not why_not:
        notes.append(f"paired t-test needs >= 2 common units (found {len(pairs)})")
    mcnemar: list[dict[str, Any]] = []
    if not why_not:  # without per-unit histories, a run's predictions of unit 0 still pair
        mcnemar, why = _mcnemar(data, a, b, pairs or [(0, 0, 0, 0)])
        if why:
            notes.append(f"McNemar skipped: {why}")
    units = [{"fold": f, "seed": k} for f, k, *_ in pairs]
    refit = refit_pair(data, a, b)
    return {"units": units, "folds": folds, "paired_t": test, "mcnemar": mcnemar, "notes": notes, "refit": refit}


def paired_tests(data: ReportData) -> list[dict[str, Any]]:
    """Per dataset: the validation-selected multi-model run against the validation-selected single model.

    Returns:
        One dict per dataset with both configurations, their test accuracy, ``units`` (the common (fold, seed)
        units), ``folds``, ``paired_t`` (None with fewer than two common units), ``mcnemar`` (one entry per common
        unit with predictions) and ``notes`` explaining gaps;
        ``vs_baseline`` holds the same tests of the best fusion and of the best single model against the
        validation-selected TF-IDF baseline (empty without baseline runs).
    """
    out = []
    trials = data.trials
    for dataset in sorted(trials["dataset"].unique()):
        fused = choose(data, trials[(trials["dataset"] == dataset) & (trials["n_models"] >= 2)])
        single = best_single(data, str(dataset))
        if fused is None or single is None:
            continue
        lexical = best_baseline(data, str(dataset))
        vs_baseline = (
            []
            if lexical is None
            else [
                {
                    "name": name,
                    "config": config_label(row),
                    "test_acc": float(row[tracking.TEST_ACC]),
                    "baseline": baseline_label(lexical),
                    "baseline_test_acc": float(lexical[tracking.TEST_ACC]),
                    **_pair(data, row, lexical),
                }
                for name, row in (("best fusion", fused), ("best single model", single))
            ]
        )
        out.append(
            {
                "dataset": str(dataset),
                "fusion": config_label(fused),
                "fusion_run_id": fused["run_id"],
                "fusion_val_acc": float(fused[tracking.VAL_ACC]),
                "fusion_test_acc": float(fused[tracking.TEST_ACC]),
                "single": config_label(single),
                "single_run_id": single["run_id"],
                "single_val_acc": float(single[tracking.VAL_ACC]),
                "single_test_acc": float(single[tracking.TEST_ACC]),
                **_pair(data, fused, single),
                "vs_baseline": vs_baseline,
            }
        )
    return out
