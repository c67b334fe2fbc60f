"""Best fusion vs best single model (and both vs TF-IDF) per dataset: paired t-test over seeds, McNemar per seed.

McNemar compares the two runs' test predictions (``predictions/test_pred_seed<k>.npy``) against the true
test labels, which the study's parent run holds (``predictions/test_labels.npy``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.tracking import PRED_ARTIFACT, TEST_LABELS_ARTIFACT
from benchmark.report.selection import config_label
from benchmark.report.stats import mcnemar_exact, paired_t
from benchmark.report.tables import baseline_label, best_baseline, best_single, choose

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from benchmark.report.runs import ReportData

log = logging.getLogger(__name__)


def _labels(data: ReportData, rows: list[pd.Series]) -> np.ndarray | None:
    for parent in dict.fromkeys(r["parent_id"] for r in rows if r["parent_id"]):
        labels = data.array(parent, TEST_LABELS_ARTIFACT)
        if labels is not None:
            return labels
    return None


def _mcnemar(
    data: ReportData, fused: pd.Series, single: pd.Series, seeds: list[int]
) -> tuple[list[dict[str, Any]], str]:
    """McNemar per common seed, and why it was skipped (empty when it ran)."""
    labels = _labels(data, [fused, single])
    if labels is None:
        return [], f"no {TEST_LABELS_ARTIFACT} on the parent study runs"
    out = []
    for seed in seeds:
        pa = data.array(fused["run_id"], PRED_ARTIFACT.format(seed=seed))
        pb = data.array(single["run_id"], PRED_ARTIFACT.format(seed=seed))
        if pa is None or pb is None:
            continue
        if not len(pa) == len(pb) == len(labels):
            log.warning(
                "report: seed %d predictions (%d, %d) and labels (%d) differ in length; McNemar skipped",
                seed,
                len(pa),
                len(pb),
                len(labels),
            )
            continue
        out.append({"seed": seed, "n": len(labels), **asdict(mcnemar_exact(pa == labels, pb == labels))})
    if out:
        return out, ""
    if single["sweep_model"]:
        return [], "the best single model comes from a layer sweep, which logs no test predictions"
    return [], f"no {PRED_ARTIFACT.format(seed='<k>')} of both runs for a common seed"


def _pair(data: ReportData, a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """Paired t-test over common seeds and McNemar per common seed of runs ``a`` and ``b``, with notes on gaps."""
    ha, hb = data.history(a["run_id"], tracking.SEED_TEST_ACC), data.history(b["run_id"], tracking.SEED_TEST_ACC)
    common = sorted(set(ha) & set(hb))
    notes = []
    test = None
    if len(common) >= 2:
        test = asdict(paired_t([ha[s] for s in common], [hb[s] for s in common]))
    else:
        notes.append(f"paired t-test needs >= 2 common seeds (found {len(common)})")
    mcnemar, why = _mcnemar(data, a, b, common or [0])
    if why:
        notes.append(f"McNemar skipped: {why}")
    return {"seeds": common, "paired_t": test, "mcnemar": mcnemar, "notes": notes}


def paired_tests(data: ReportData) -> list[dict[str, Any]]:
    """Per dataset: the validation-selected multi-model run against the validation-selected single model.

    Returns:
        One dict per dataset with both configurations, their test accuracy, ``paired_t`` (None with fewer
        than two common seeds), ``mcnemar`` (one entry per seed with predictions) and ``notes`` explaining gaps;
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
