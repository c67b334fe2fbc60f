"""The report's numbers as DataFrames: best vs last layer, last-k aggregation, fusion methods, multi-model, cost.

Every function applies the validation selection rule of ``selection.rank`` and carries the chosen row's
test scores alongside; nothing here formats text or draws.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.report.selection import best, config_label, display, last_k, layers_label, num_layers, rank
from benchmark.report.stats import unit_stats
from benchmark.report.ties import COST, TIE_COLUMNS, UNITS, picked, tie, tie_groups, trial_candidates

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.runs import ReportData

UNIT_COLUMNS = ("test_n", "test_mean", "test_std", "test_ci_low", "test_ci_high")  # test accuracy over units
CONFIG_COLUMNS = (
    "dataset",
    "models",
    "n_models",
    "fusion",
    "config",
    "layers_label",
    "layers",
    "val_acc",
    "val_f1",
    "test_acc",
    "test_f1",
    "trial",
    "study",
    "preset",
    "run_id",
    *UNIT_COLUMNS,
)
COST_COLUMNS = ("fused_dim", "feature_mib", "extract_ms_per_sample", "head_ms_per_sample")
BEST_LAST_COLUMNS = (
    "dataset",
    "model",
    "source",
    "layers_evaluated",
    "last_layer",
    "last_val_acc",
    "last_test_acc",
    "best_layer",
    "best_val_acc",
    "best_test_acc",
    "gain_val",
    "gain_test",
    "best_run_id",
    "best_study",
    *(f"best_{c}" for c in UNIT_COLUMNS),
    "val_acc_se",
    "tied_with_best",
    "tied_layers",
    "top_layer",
    "rule",
)
LAST_K_COLUMNS = (
    "dataset",
    "model",
    "agg",
    "k",
    tracking.VAL_ACC,
    tracking.VAL_F1,
    tracking.TEST_ACC,
    "trial",
    "run_id",
    *UNIT_COLUMNS,
)
SCRATCH = [tracking.VAL_ACC, tracking.VAL_F1, UNITS, COST]  # ranking inputs of config rows, dropped once ranked
MIB = 2**20


def frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """``rows`` as a DataFrame with exactly ``columns``, also when empty, so every table can be indexed by column."""
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns))


def unit_columns(data: ReportData, run_id: str, prefix: str = "") -> dict[str, float]:
    """Test statistics of a run over its units (``seed/test_acc``, step = unit); NaNs where it has no such history."""
    values = [v for _, v in sorted(data.history(run_id, tracking.SEED_TEST_ACC).items())]
    stats = unit_stats(values) if values else None
    keys = [f"{prefix}{c}" for c in UNIT_COLUMNS]
    if stats is None:
        return dict.fromkeys(keys, math.nan)
    return dict(zip(keys, (stats.n, stats.mean, stats.std, stats.ci_low, stats.ci_high), strict=True))


def best_vs_last(data: ReportData, points: pd.DataFrame, depth: dict[str, int | None]) -> pd.DataFrame:
    """Table 2's "Specific Layer" rows: per dataset and model, the last layer vs the layer chosen on validation.

    ``points`` are ``layer_points`` ranked per (dataset, model) by ``ties.tie_groups``; ``best_*`` describe the
    layer the rule picked. Gains are best minus last (positive = choosing the layer on validation beat the last
    layer). ``val_acc_se``: the picked layer's standard error over units; ``tied_with_best``: the last layer is
    tied with the best (so choosing a layer did not beat it by more than one standard error); ``tied_layers``: every
    layer tied with the best; ``top_layer``: the highest mean (the ``argmax`` choice).
    """
    rows = []
    for (dataset, model), group in points.groupby(["dataset", "model"], sort=True):
        chosen = picked(group)
        if chosen is None:
            continue
        last = depth.get(str(model))  # None: depth unknown, so no last-layer comparison
        at_last = group[group["layer"] == last]
        last_val = float(at_last[tracking.VAL_ACC].iloc[0]) if len(at_last) else math.nan
        last_test = float(at_last[tracking.TEST_ACC].iloc[0]) if len(at_last) else math.nan
        row: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "source": chosen["source"],
            "layers_evaluated": len(group),
            "last_layer": last,
            "last_val_acc": last_val,
            "last_test_acc": last_test,
            "best_layer": int(chosen["layer"]),
            "best_val_acc": float(chosen[tracking.VAL_ACC]),
            "best_test_acc": float(chosen[tracking.TEST_ACC]),
            "gain_val": float(chosen[tracking.VAL_ACC]) - last_val,
            "gain_test": float(chosen[tracking.TEST_ACC]) - last_test,
            "best_run_id": chosen["run_id"],
            "best_study": chosen["study"],
            "val_acc_se": float(chosen["val_acc_se"]),
            "tied_with_best": bool(at_last["tied_with_best"].iloc[0]) if len(at_last) else False,
            "tied_layers": " ".join(str(int(x)) for x in sorted(group.loc[group["tied_with_best"], "layer"])),
            "top_layer": int(group.loc[group["top"], "layer"].iloc[0]),
            "rule": data.rule,
        }
        own = bool(chosen["own"])
        row.update(
            unit_columns(data, chosen["run_id"], "best_")
            if own
            else dict.fromkeys([f"best_{c}" for c in UNIT_COLUMNS], math.nan)
        )
        rows.append(row)
    return frame(rows, BEST_LAST_COLUMNS)


def layer_grid(points: pd.DataFrame, dataset: str, split: str = tracking.TEST_ACC) -> pd.DataFrame:
    """Tables 3-4: accuracy per layer (rows) and model (columns) on one dataset."""
    sub = points[points["dataset"] == dataset]
    return sub.pivot_table(index="layer", columns="model", values=split, aggfunc="first").sort_index()


def last_k_table(data: ReportData) -> pd.DataFrame:
    """Figure 3's data: per dataset, model, aggregation (mean/max/min) and k, the validation-selected run.

    Each (dataset, model) is one ranking over its aggregations and k (``TIE_COLUMNS``).
    """
    rows = []
    singles = data.trials[data.trials["n_models"] == 1]
    for t in trial_candidates(data, singles, num_layers(data)).to_dict("records"):
        model = t["models"][0]
        found = last_k(t["layers"].get(model))
        if found is None:
            continue
        rows.append(
            {
                "dataset": t["dataset"],
                "model": model,
                "agg": found[0],
                "k": found[1],
                tracking.VAL_ACC: t[tracking.VAL_ACC],
                tracking.VAL_F1: t[tracking.VAL_F1],
                tracking.TEST_ACC: t[tracking.TEST_ACC],
                "trial": t["trial"],
                "run_id": t["run_id"],
                UNITS: t[UNITS],
                COST: t[COST],
            }
        )
    df = rank(frame(rows, (*LAST_K_COLUMNS, UNITS, COST))).drop_duplicates(["dataset", "model", "agg", "k"])
    stats = [unit_columns(data, run_id) for run_id in df["run_id"]]  # only the kept rows: one history read each
    df = df.assign(**{c: [s[c] for s in stats] for c in UNIT_COLUMNS}) if stats else df
    df = tie_groups(df, ["dataset", "model"], data.rule).drop(columns=[UNITS, COST])
    return df.sort_values(["dataset", "model", "agg", "k"]).reset_index(drop=True)


def last_k_best(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, model and aggregation, the validation-selected k (rows of ``last_k_table``)."""
    picked = rank(table).drop_duplicates(["dataset", "model", "agg"])
    return picked.sort_values(["dataset", "model", "agg"]).reset_index(drop=True)


def _ranked_configs(
    data: ReportData, rows: list[dict[str, Any]], columns: tuple[str, ...], keys: list[str]
) -> pd.DataFrame:
    """Config rows (with ``units`` and ``cost``) ranked per group of ``keys`` with the tie columns."""
    df = frame(rows, (*columns, UNITS, COST))
    df = df.assign(**{tracking.VAL_ACC: df["val_acc"], tracking.VAL_F1: df["val_f1"]})
    return tie_groups(df, keys, data.rule).drop(columns=SCRATCH)


def _candidate(data: ReportData, row: pd.Series) -> dict[str, Any]:
    """A trial row's ranking inputs: its per-unit validation scores and its ``one-se`` cost."""
    one = trial_candidates(data, row.to_frame().T, num_layers(data)).iloc[0]
    return {UNITS: one[UNITS], COST: one[COST]}


def _config_row(data: ReportData, row: pd.Series) -> dict[str, Any]:
    """A run as a table row (``CONFIG_COLUMNS``): configuration, scores and its test statistics over units."""
    out: dict[str, Any] = {
        "dataset": row["dataset"],
        "models": ",".join(row["models"]),
        "n_models": int(row["n_models"]),
        "fusion": row["fusion"],
        "config": config_label(row),
        "layers_label": layers_label(row),
        "layers": "; ".join(f"{m}={row['layers'][m]}" for m in row["models"] if m in row["layers"]),
        "val_acc": float(row[tracking.VAL_ACC]),
        "val_f1": float(row[tracking.VAL_F1]),
        "test_acc": float(row[tracking.TEST_ACC]),
        "test_f1": float(row[tracking.TEST_F1]),
        "trial": int(row["trial"]),
        "study": row["study"],
        "preset": row["preset"],
        "run_id": row["run_id"],
    }
    out.update(unit_columns(data, row["run_id"]))
    return out


def choose(data: ReportData, trials: pd.DataFrame) -> pd.Series | None:
    """The trial ``data.rule`` picks among trial rows ``trials`` as one ranking (None when none has val/acc)."""
    trials = trials[trials[tracking.VAL_ACC].notna()]
    return None if trials.empty else picked(tie(trial_candidates(data, trials, num_layers(data)), data.rule))


def best_single(data: ReportData, dataset: str, members: tuple[str, ...] | None = None) -> pd.Series | None:
    """The single-model run ``selection.rule`` picks on ``dataset`` (optionally only among ``members``)."""
    t = data.trials
    mask = (t["dataset"] == dataset) & (t["n_models"] == 1)
    if members is not None:
        mask &= t["models"].map(lambda ms: ms[0] in members)
    return choose(data, t[mask])


FUSION_COLUMNS = (*CONFIG_COLUMNS, "pair", "best_member", "best_member_test_acc", "gain_test_vs_member", "chosen")


def fusion_comparison(data: ReportData) -> pd.DataFrame:
    """Table 2's two-model rows: per dataset, model pair and fusion, the validation-selected layers.

    Each (dataset, pair) is one ranking over its fusions (``TIE_COLUMNS``); ``chosen`` marks the fusion the rule
    picked.
    """
    t = data.trials[data.trials["n_models"] == 2]
    rows = []
    members: dict[tuple[str, tuple[str, ...]], pd.Series | None] = {}  # one search per pair, not per fusion
    for (dataset, pair, _), group in t.groupby(["dataset", t["models"].map(_set_key), "fusion"], sort=True):
        chosen = best(group)
        if chosen is None:
            continue
        row = _config_row(data, chosen)
        row["pair"] = " + ".join(display(m) for m in chosen["models"])
        if (dataset, pair) not in members:
            members[dataset, pair] = best_single(data, str(dataset), pair)
        single = members[dataset, pair]
        row["best_member"] = config_label(single) if single is not None else ""
        row["best_member_test_acc"] = float(single[tracking.TEST_ACC]) if single is not None else math.nan
        row["gain_test_vs_member"] = row["test_acc"] - row["best_member_test_acc"]
        rows.append({**row, **_candidate(data, chosen)})
    df = _ranked_configs(data, rows, FUSION_COLUMNS, ["dataset", "pair"])
    df = df.sort_values(["dataset", "pair", "val_acc"], ascending=[True, True, False], kind="stable")
    return df.assign(chosen=df["picked"].astype(bool)).reset_index(drop=True)


PRUNED_CELL_COLUMNS = ("dataset", "pair", "fusion", "val_acc", "preset", "trials")


def pruned_fusions(data: ReportData) -> pd.DataFrame:
    """Two-model (pair, fusion) cells that only ever ran as pruned trials.

    The validation accuracy they last reported before being cut (the highest over the cell's trials, with that
    trial's preset) and how many trials that was.
    Cells with a finished trial are ``fusion_comparison``'s.
    """
    cut = data.pruned
    if cut is None or cut.empty:
        return frame([], PRUNED_CELL_COLUMNS)
    cut = cut[cut["n_models"] == 2]
    done = data.trials[data.trials["n_models"] == 2]
    finished = {(d, _set_key(m), f) for d, m, f in zip(done["dataset"], done["models"], done["fusion"], strict=True)}
    rows = []
    for (dataset, pair, fusion), group in cut.groupby(["dataset", cut["models"].map(_set_key), "fusion"], sort=True):
        if (dataset, pair, fusion) not in finished:
            top = group.loc[group[tracking.VAL_ACC].idxmax()]
            rows.append(
                {
                    "dataset": dataset,
                    "pair": " + ".join(display(m) for m in top["models"]),
                    "fusion": fusion,
                    "val_acc": float(top[tracking.VAL_ACC]),
                    "preset": top["preset"],
                    "trials": len(group),
                }
            )
    return frame(rows, PRUNED_CELL_COLUMNS)


def _set_key(models: tuple[str, ...]) -> tuple[str, ...]:
    """A model set as an order-free key."""
    return tuple(sorted(models))


def multi_model(data: ReportData, min_models: int = 3) -> pd.DataFrame:
    """Tables 5-6: per dataset and model set of ``min_models`` or more, the validation-selected fusion/layers.

    The model sets of a dataset are one ranking (``TIE_COLUMNS``).
    """
    t = data.trials[data.trials["n_models"] >= min_models]
    rows = []
    for _, group in t.groupby(["dataset", t["models"].map(_set_key)], sort=True):
        chosen = best(group)
        if chosen is not None:
            rows.append({**_config_row(data, chosen), **_candidate(data, chosen)})
    df = _ranked_configs(data, rows, CONFIG_COLUMNS, ["dataset"])
    return df.sort_values(["dataset", "models"], kind="stable").reset_index(drop=True)


def costed(data: ReportData) -> pd.DataFrame:
    """Trials that measured their cost (``perf/feature_bytes``), less layer sweeps.

    A sweep's costs are those of training every layer at once (all layers' bytes, every pass), not of its chosen
    layer alone, so beside single fits they would overstate a single model's cost L+1-fold.
    """
    t = data.trials
    return t[t[tracking.PERF_FEATURE_BYTES].notna() & t[tracking.VAL_ACC].notna() & (t["sweep_model"] == "")]


def cost_by_models(data: ReportData) -> pd.DataFrame:
    """Sec. 5.4: per dataset and number of models, the costed run the rule picks and what it costs."""
    rows = []
    for _, group in costed(data).groupby(["dataset", "n_models"], sort=True):
        chosen = choose(data, group)
        if chosen is not None:
            rows.append({**_config_row(data, chosen), **_costs(chosen), "trials": len(group)})
    return frame(rows, (*CONFIG_COLUMNS, *COST_COLUMNS, "trials"))


def _costs(row: pd.Series) -> dict[str, float]:
    return {
        "fused_dim": float(row[tracking.PERF_FUSED_DIM]),
        "feature_mib": float(row[tracking.PERF_FEATURE_BYTES]) / MIB,
        "extract_ms_per_sample": float(row[tracking.PERF_EXTRACT_MS_PER_SAMPLE]),
        "head_ms_per_sample": float(row[tracking.PERF_HEAD_MS_PER_SAMPLE]),
    }


def pareto(data: ReportData) -> pd.DataFrame:
    """Per dataset, the runs no other run beats on both validation accuracy and feature memory (cheapest first)."""
    rows = []
    for _, group in costed(data).groupby("dataset", sort=True):
        ordered = rank(group).sort_values(tracking.PERF_FEATURE_BYTES, kind="stable")  # cheapest first, best val first
        top = -math.inf
        for _, row in ordered.iterrows():
            if row[tracking.VAL_ACC] > top:
                top = float(row[tracking.VAL_ACC])
                rows.append({**_config_row(data, row), **_costs(row)})
    return frame(rows, (*CONFIG_COLUMNS, *COST_COLUMNS))


def overall(data: ReportData) -> pd.DataFrame:
    """Every finished trial of each dataset as one ranking (``TIE_COLUMNS``), best first.

    The overall pick is the ``picked`` row of each dataset.
    """
    ranked = tie_groups(trial_candidates(data, data.trials, num_layers(data)), ["dataset"], data.rule)
    return ranked.drop(columns=[UNITS, COST]).reset_index(drop=True)


REFIT_COLUMNS = ("refit_test_acc", "refit_run_id", "baseline_refit_test_acc")


def refit_of(data: ReportData, run_id: str) -> tuple[float, str]:
    """Test accuracy (mean over seeds) and run of ``run_id``'s refit on all training rows; NaN and "" without one."""
    refit = data.refits.get(run_id)
    return (math.nan, "") if refit is None else (float(refit["test_acc"]), str(refit["run_id"]))


def best_configs(data: ReportData, ranked: pd.DataFrame | None = None) -> pd.DataFrame:
    """The configuration ``selection.rule`` picks per dataset over every finished trial (``ranked``: ``overall``).

    With the refit of that trial on all training rows (the study's result) and of the dataset's chosen baseline.
    """
    ranked = overall(data) if ranked is None else ranked
    rows = []
    for _, r in ranked[ranked["picked"].astype(bool)].iterrows():
        acc, run = refit_of(data, r["run_id"])
        base = best_baseline(data, str(r["dataset"]))
        refit = {
            "refit_test_acc": acc,
            "refit_run_id": run,
            "baseline_refit_test_acc": math.nan if base is None else refit_of(data, base["run_id"])[0],
        }
        rows.append({**_config_row(data, r), **_costs(r), **{c: r[c] for c in TIE_COLUMNS}, **refit})
    return frame(rows, (*CONFIG_COLUMNS, *COST_COLUMNS, *TIE_COLUMNS, *REFIT_COLUMNS))


def tied_configs(data: ReportData, ranked: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, every configuration tied with the best (``ranked``: ``overall``), with its test scores."""
    rows = [
        {**_config_row(data, r), **{c: r[c] for c in TIE_COLUMNS}}
        for _, r in ranked[ranked["tied_with_best"].astype(bool)].iterrows()
    ]
    return frame(rows, (*CONFIG_COLUMNS, *TIE_COLUMNS))


BASELINE_NAMES = {"svm": "linear SVM", "logreg": "logistic regression"}


def baseline_label(row: pd.Series | Any) -> str:
    """``TF-IDF 1-2 gram + linear SVM (C=1)``."""
    return f"TF-IDF 1-2 gram + {BASELINE_NAMES.get(row['classifier'], row['classifier'])} (C={row['C']:g})"


def baseline_grid(data: ReportData) -> pd.DataFrame:
    """Every finished baseline trial, best first per dataset by the selection rule, with ``chosen`` marking the top.

    The baseline trials of a dataset are one ranking: ``tied_with_best`` marks those tied with the top.
    """
    columns = (*CONFIG_COLUMNS, "classifier", "C", "chosen", "tied_with_best")
    base = data.baselines
    if base is None or base.empty:
        return frame([], columns)
    rows = []
    for _, group in base.groupby("dataset", sort=True):
        for _, r in tie_groups(trial_candidates(data, group, {}), ["dataset"], data.rule).iterrows():
            rows.append(
                {
                    **_config_row(data, r),
                    "config": baseline_label(r),
                    "classifier": r["classifier"],
                    "C": float(r["C"]),
                    "chosen": bool(r["top"]),
                    "tied_with_best": bool(r["tied_with_best"]),
                }
            )
    return frame(rows, columns)


def best_baseline(data: ReportData, dataset: str) -> pd.Series | None:
    """The baseline trial the rule picks on ``dataset`` (None without baseline runs)."""
    base = data.baselines
    if base is None or base.empty:
        return None
    return choose(data, base[base["dataset"] == dataset])


def baseline_test_acc(data: ReportData, dataset: str) -> float:
    """Test accuracy of the validation-selected baseline on ``dataset`` (NaN without one)."""
    row = best_baseline(data, dataset)
    return math.nan if row is None else float(row[tracking.TEST_ACC])
