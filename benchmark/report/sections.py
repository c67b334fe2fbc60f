"""Compute every table once (``compute``) and lay them out with their figures as a ``Doc`` (``build``).

Each section says which numbers are validation (used for every choice) and which are test (reported for the
validation-selected configuration only). Sections without matching runs say which preset would fill them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.report import plots
from benchmark.report.compare import paired_tests
from benchmark.report.regret import selection_regret
from benchmark.report.render import Bold, Doc, fmt, fmt_units, slug
from benchmark.report.reproduce import command
from benchmark.report.selection import SELECTION_RULE, display, layer_points, num_layers
from benchmark.report.tables.baseline import BASELINE_NAMES, baseline_grid
from benchmark.report.tables.best import best_configs, overall, tied_configs
from benchmark.report.tables.cost import cost_by_models, costed, pareto
from benchmark.report.tables.fusion import fusion_comparison, multi_model, pruned_fusions
from benchmark.report.tables.layers import best_vs_last, last_k_best, last_k_table, layer_grid
from benchmark.report.ties import TIED_MARK, UNIT_NOTE, rule_text, tie_groups, units_summary
from studies.presets import FUSION_METHODS

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from benchmark.report.runs import ReportData


@dataclass
class Computed:
    """All report tables (DataFrames) plus the paired tests, computed once from ``ReportData``."""

    depth: dict[str, int | None]
    points: pd.DataFrame
    best_last: pd.DataFrame
    last_k: pd.DataFrame
    fusion: pd.DataFrame
    multi: pd.DataFrame
    cost: pd.DataFrame
    pareto: pd.DataFrame
    best: pd.DataFrame
    commands: dict[str, str]
    paired: list[dict[str, Any]]
    baseline: pd.DataFrame
    lexical: dict[str, float]  # dataset -> test accuracy of the validation-selected TF-IDF baseline
    pruned_fusion: pd.DataFrame  # two-model (pair, fusion) cells whose every trial was pruned
    overall: pd.DataFrame  # every finished trial, ranked per dataset with the tie columns
    tied: pd.DataFrame  # per dataset, the configurations tied with the best, with their test scores
    regret: pd.DataFrame  # per dataset, what the choice cost on test against the best candidate (a diagnostic)


def compute(data: ReportData) -> Computed:
    """Run every table function of ``tables`` and ``compare`` on ``data``."""
    depth = num_layers(data)
    points = tie_groups(layer_points(data, depth), ["dataset", "model"], data.rule)
    points = points.sort_values(["dataset", "model", "layer"]).reset_index(drop=True)
    ranked = overall(data)
    best = best_configs(data, ranked)
    trials = data.trials.set_index("run_id", drop=False)
    commands = {}
    for _, r in best.iterrows():
        config = data.artifact(r["run_id"], tracking.CONFIG_ARTIFACT)
        commands[str(r["dataset"])] = command(trials.loc[r["run_id"]], None if config is None else config.decode())
    grid = baseline_grid(data)
    lexical = (
        {str(r["dataset"]): float(r["test_acc"]) for _, r in grid.iterrows() if r["chosen"]} if not grid.empty else {}
    )
    return Computed(
        depth,
        points,
        best_vs_last(data, points, depth),
        last_k_table(data),
        fusion_comparison(data),
        multi_model(data),
        cost_by_models(data),
        pareto(data),
        best,
        commands,
        paired_tests(data),
        grid,
        lexical,
        pruned_fusions(data),
        ranked,
        tied_configs(data, ranked),
        selection_regret(data, best, points),
    )


def _lexical(c: Computed, dataset: Any) -> str:
    """The TF-IDF baseline's test accuracy on ``dataset`` as a table cell (— without baseline runs)."""
    return fmt(c.lexical.get(str(dataset), float("nan")))


def _vs_lexical(c: Computed, dataset: Any, acc: float) -> str:
    return fmt(acc - c.lexical.get(str(dataset), float("nan")), sign=True)


OPTIONAL = ("over units", "TF-IDF", "refit")  # columns left out when no row has a value (one unit, no baseline)


def _table(doc: Doc, headers: list[str], rows: list[list[str]]) -> None:
    """Add a table, leaving out optional columns (seed statistics, TF-IDF) that are empty in every row."""
    keep = [
        i
        for i, h in enumerate(headers)
        if not (any(o in h for o in OPTIONAL) and all(str(r[i]) in ("—", "") for r in rows))
    ]
    doc.table([headers[i] for i in keep], [[r[i] for i in keep] for r in rows])


def _figure(doc: Doc, fig: Any, folder: Path, name: str, caption: str, files: list[Path]) -> None:
    stem, n = name.removesuffix(".png"), 1
    while (folder / name).exists():  # two models whose short names coincide
        n += 1
        name = f"{stem}-{n}.png"
    files.append(plots.save(fig, folder / name))
    doc.image(name, caption)


def _tied(flag: Any) -> str:
    return "yes" if bool(flag) else "no"


def _mark(text: str, tied: Any) -> str:
    """A grid cell with the tie mark when its candidate is tied with the best (the chosen one is bold instead)."""
    return f"{text} {TIED_MARK}" if bool(tied) else text


def _intro(doc: Doc, data: ReportData) -> None:
    t, base = data.trials, data.baselines
    datasets = sorted({display(d) for d in (*t["dataset"], *(() if base is None else base["dataset"]))})
    lexical = f" (+{len(base)} TF-IDF baseline)" if base is not None and len(base) else ""
    doc.para(
        f"Studies: {', '.join(sorted(data.counts))}. Datasets: {', '.join(datasets)}. "
        f"Finished trials: {len(t)}{lexical}."
    )
    doc.note(
        f"Selection rule: {SELECTION_RULE}. Validation is the held-out part of train (or the dataset's own "
        "validation split; with data.cv_folds each fold of train in turn); columns marked (test) are test scores "
        "of the validation-selected configuration. "
        "Columns over units summarise a configuration's test accuracy over its units (defined below: folds x "
        "seeds, or seeds with the single split) where it has several: ± is the sample std over units and [..] a "
        "95% percentile-bootstrap interval of the mean (10,000 resamples, seed 0); paired tests pair each unit "
        "with the same (fold, seed) unit of the other configuration."
    )
    doc.note(
        f"Chosen by selection.rule = {data.rule} ({rule_text(data.rule)}). Every ranking also has a tie set: the "
        "candidates whose mean validation accuracy is within one standard error of the best's, the standard error "
        f"being that of the paired per-unit differences to the best; tables mark them (tied with best: yes, or "
        f"{TIED_MARK} in a grid). {UNIT_NOTE}"
    )


def _best_section(doc: Doc, c: Computed) -> None:
    doc.heading("Best configuration found (validation-selected)")
    if c.best.empty:
        doc.note("No trials of the neural presets: only the TF-IDF baseline below.")
        return
    rows = [
        [
            display(r["dataset"]),
            r["config"],
            r["study"],
            str(r["trial"]),
            fmt(r["val_acc"]),
            Bold(fmt(r["test_acc"])),
            fmt_units(r),
            _lexical(c, r["dataset"]),
            _vs_lexical(c, r["dataset"], r["test_acc"]),
            Bold(fmt(r["refit_test_acc"])) if r["refit_run_id"] else "—",
            fmt(r["baseline_refit_test_acc"]),
            fmt(r["refit_test_acc"] - r["baseline_refit_test_acc"], sign=True),
        ]
        for _, r in c.best.iterrows()
    ]
    _table(
        doc,
        [
            "dataset",
            "configuration",
            "study",
            "trial",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "TF-IDF (test)",
            "vs TF-IDF (test)",
            "refit on all train (test)",
            "TF-IDF refit (test)",
            "refit vs TF-IDF refit (test)",
        ],
        rows,
    )
    doc.note(
        "test acc: the mean of the heads fit on the validation folds' training rows (the scores the choice was made "
        "beside). The study's result is the refit: the chosen configuration trained again on all training rows, "
        "per seed, for the median best epoch of its fits (`layerfuse refit`), and the TF-IDF baseline refit the same "
        "way. A dash: no refit of that trial yet (`layerfuse refit --study STUDY --trial N`)."
    )
    doc.heading("Configurations tied with the best (validation)", 3)
    doc.note(
        f"Every configuration within one standard error of each dataset's best on validation ({len(c.tied)} in all), "
        "with its test accuracy: the spread the single choice above hides. Bold: the one the rule chose."
    )
    _table(
        doc,
        ["dataset", "configuration", "study", "trial", "val acc", "val SE", "units", "test acc (test)"],
        [
            [
                display(r["dataset"]),
                (Bold if r["picked"] else str)(r["config"]),
                r["study"],
                str(r["trial"]),
                fmt(r["val_acc"]),
                fmt(r["val_acc_se"]),
                str(int(r["n_units"])),
                fmt(r["test_acc"]),
            ]
            for _, r in c.tied.iterrows()
        ],
    )
    _regret_section(doc, c)
    for dataset, cmd in c.commands.items():
        doc.para(
            f"Re-train the best {display(dataset)} configuration on its units (its folds and seeds; from the "
            "repository root, where the study ran):"
        )
        doc.code(cmd)


def _regret_section(doc: Doc, c: Computed) -> None:
    if c.regret.empty:
        return
    doc.heading("Selection regret (test, a diagnostic)", 3)
    doc.note(
        "What the validation choice cost: its test accuracy minus the best test accuracy among every candidate "
        "scored on the dataset (every trial and every swept layer, all as fold heads), and whether it beats the "
        "chosen TF-IDF baseline and the chosen single model by at least 0.5 points (basis: their refits on all "
        "training rows where both have one, else the fold heads). Test never made a choice."
    )
    _table(
        doc,
        [
            "dataset",
            "rule",
            "chosen (test)",
            "best on test (test)",
            "regret (test)",
            "candidates",
            "vs TF-IDF (test)",
            "vs best single model (test)",
            "basis",
        ],
        [
            [
                display(r["dataset"]),
                r["rule"],
                f"{r['chosen']}: {fmt(r['chosen_test_acc'])}",
                f"{r['best_test_config']}: {fmt(r['best_test_acc'])}",
                fmt(r["regret"], sign=True),
                str(int(r["candidates"])),
                f"{fmt(r['vs_baseline'], sign=True)} ({'beats' if r['beats_baseline'] else 'does not beat'})",
                f"{fmt(r['vs_single'], sign=True)} vs {r['single_config']} "
                f"({'beats' if r['beats_single'] else 'does not beat'})",
                r["basis"],
            ]
            for _, r in c.regret.iterrows()
        ],
    )


def _layer_section(doc: Doc, c: Computed, folder: Path, files: list[Path]) -> None:
    doc.heading("Accuracy by layer (Figure 2)")
    if c.points.empty:
        doc.note("No single-layer runs: run the `layer-sweep` preset to fill this section.")
        return
    doc.note(
        "Single layers of single models, from layer-sweep runs (same head settings for every layer); a model "
        f"without a sweep shows its single-layer trials instead (column source; diamonds {plots.FROM_TRIALS})."
    )
    layers = c.points.groupby(["model", "dataset"])["layer"].nunique().groupby(level="model").max()
    flat = sorted(str(m) for m, n in layers.items() if n < 2)
    for model in sorted(m for m in c.points["model"].unique() if m not in flat):
        rows = c.best_last[c.best_last["model"] == model]
        _figure(
            doc,
            plots.acc_by_layer(c.points[c.points["model"] == model], rows, display(model)),
            folder,
            f"acc_by_layer_{slug(display(model))}.png",
            f"Accuracy by layer for {display(model)}: validation "
            "(solid) and test (dashed); stars mark the layer chosen on validation (large: its validation, small: its "
            "test accuracy), the dotted line the last layer.",
            files,
        )
    if flat:
        doc.note(
            f"No accuracy-by-layer figure for {', '.join(display(m) for m in flat)}: a single layer was scored "
            "(e.g. TF-IDF, a one-layer feature); its numbers are in the tables below."
        )
    doc.heading("Best layer vs last layer (Table 2, Specific Layer rows)", 3)
    _table(
        doc,
        [
            "dataset",
            "model",
            "source",
            "last layer",
            "last val",
            "last test (test)",
            "best layer (val-selected)",
            "best val",
            "best test (test)",
            "gain val",
            "gain (test)",
            "best over units (test)",
            "best val SE",
            "layers tied with best",
            "last tied with best",
            "TF-IDF (test)",
        ],
        [
            [
                display(r["dataset"]),
                display(r["model"]),
                r["source"],
                fmt(r["last_layer"], 0),
                fmt(r["last_val_acc"]),
                fmt(r["last_test_acc"]),
                Bold(str(r["best_layer"])),
                fmt(r["best_val_acc"]),
                fmt(r["best_test_acc"]),
                fmt(r["gain_val"], sign=True),
                Bold(fmt(r["gain_test"], sign=True)),
                fmt_units(r, "best_"),
                fmt(r["val_acc_se"]),
                r["tied_layers"],
                _tied(r["tied_with_best"]) if r["last_layer"] is not None else "—",
                _lexical(c, r["dataset"]),
            ]
            for _, r in c.best_last.iterrows()
        ],
    )
    for dataset in sorted(c.points["dataset"].unique()):
        val, test = layer_grid(c.points, dataset, tracking.VAL_ACC), layer_grid(c.points, dataset)
        layers, models = val.index.union(test.index), val.columns.union(test.columns)
        val, test = val.reindex(index=layers, columns=models), test.reindex(index=layers, columns=models)
        chosen = {r["model"]: r["best_layer"] for _, r in c.best_last[c.best_last["dataset"] == dataset].iterrows()}
        sub = c.points[c.points["dataset"] == dataset]
        sub = sub[sub["tied_with_best"].astype(bool)]
        tied = set(zip(sub["layer"], sub["model"], strict=True))
        doc.heading(f"Layer-wise accuracy on {display(dataset)} (Tables 3-4)", 3)
        doc.note(
            "Each cell: validation / test accuracy of that single layer; bold = the layer chosen on validation; "
            f"{TIED_MARK} = another layer tied with the model's best."
        )
        doc.table(
            ["layer", *[f"{display(str(m))} (val / test)" for m in models]],
            [
                [
                    str(layer),
                    *[
                        (Bold if chosen.get(m) == layer else str)(
                            _mark(f"{fmt(val.at[layer, m])} / {fmt(v)}", (layer, m) in tied and chosen.get(m) != layer)
                        )
                        for m, v in row.items()
                    ],
                ]
                for layer, row in test.iterrows()
            ],
        )


def _last_k_section(doc: Doc, c: Computed, folder: Path, files: list[Path]) -> None:
    doc.heading("Last-k layer aggregation (Figure 3)")
    if c.last_k.empty:
        doc.note("No last-k runs: run the `last-k` preset to fill this section.")
        return
    ks = c.last_k.groupby("model")["k"].nunique()
    flat = sorted(str(m) for m, n in ks.items() if n < 2)
    for model in sorted(m for m in c.last_k["model"].unique() if m not in flat):
        sub = c.last_k[c.last_k["model"] == model]
        _figure(
            doc,
            plots.last_k_curves(sub, c.best_last[c.best_last["model"] == model], display(model)),
            folder,
            f"last_k_{slug(display(model))}.png",
            f"Mean/max/min of the last k layers of {display(model)}: "
            "validation (left), test (right); reference lines: the last layer alone and the validation-selected "
            "single layer.",
            files,
        )
    if flat:
        doc.note(f"No last-k figure for {', '.join(display(m) for m in flat)}: only k = 1 was scored (one layer).")
    best = last_k_best(c.last_k)
    top = set(c.last_k.loc[c.last_k["picked"].astype(bool), "run_id"])
    _table(
        doc,
        [
            "dataset",
            "model",
            "aggregation",
            "k (val-selected)",
            "k tried",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "TF-IDF (test)",
            "tied with best",
        ],
        [
            [
                display(r["dataset"]),
                display(r["model"]),
                r["agg"],
                str(r["k"]),
                _k_range(c.last_k, r),
                (Bold if r["run_id"] in top else str)(fmt(r[tracking.VAL_ACC])),
                fmt(r[tracking.TEST_ACC]),
                fmt_units(r),
                _lexical(c, r["dataset"]),
                _tied(r["tied_with_best"]),
            ]
            for _, r in best.iterrows()
        ],
    )
    doc.note(
        "One row per aggregation: the k chosen on validation among those scored (every k is in the figure and "
        "in summary.json); bold: the aggregation and k chosen on validation for each model and dataset; tied with "
        "best: within one standard error of the model's best aggregation and k."
    )


def _k_range(table: pd.DataFrame, r: pd.Series) -> str:
    ks = table[(table["dataset"] == r["dataset"]) & (table["model"] == r["model"]) & (table["agg"] == r["agg"])]["k"]
    return f"{int(ks.min())}..{int(ks.max())}" if ks.nunique() > 1 else str(int(ks.min()))


def _fusion_section(doc: Doc, c: Computed, folder: Path, files: list[Path]) -> None:
    doc.heading("Fusion methods on model pairs (Table 2, Two Models rows)")
    if c.fusion.empty:
        doc.note("No two-model runs: run the `fusion-methods` preset to fill this section.")
        return
    singles = {p["dataset"]: p["single_test_acc"] for p in c.paired}
    _figure(
        doc,
        plots.fusion_methods(c.fusion, singles),
        folder,
        "fusion_comparison.png",
        "Test accuracy per model pair and fusion method at the layers chosen on validation; the frame marks the "
        "fusion chosen on validation for each pair; colour: gain over the validation-selected single model (test).",
        files,
    )
    doc.heading("Fusion chosen on validation per pair", 3)
    chosen, cut = c.fusion[c.fusion["chosen"]], c.pruned_fusion

    def tied_fusions(dataset: Any, pair: str) -> str:
        rows = c.fusion[(c.fusion["dataset"] == dataset) & (c.fusion["pair"] == pair) & c.fusion["tied_with_best"]]
        return ", ".join(rows["fusion"])

    def tried(dataset: Any, pair: str) -> str:
        finished = (c.fusion["dataset"] == dataset) & (c.fusion["pair"] == pair)
        pruned = (cut["dataset"] == dataset) & (cut["pair"] == pair)
        return f"{int(finished.sum())} / {int(pruned.sum())}"

    _table(
        doc,
        [
            "dataset",
            "pair",
            "fusion (val-selected)",
            "fusions finished / pruned",
            "fusions tied with best",
            "layers (val-selected)",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "best member (val-selected)",
            "member (test)",
            "gain vs member (test)",
            "TF-IDF (test)",
        ],
        [
            [
                display(r["dataset"]),
                r["pair"],
                r["fusion"],
                tried(r["dataset"], r["pair"]),
                tied_fusions(r["dataset"], r["pair"]),
                r["layers_label"],
                fmt(r["val_acc"]),
                fmt(r["test_acc"]),
                fmt_units(r),
                r["best_member"],
                fmt(r["best_member_test_acc"]),
                fmt(r["gain_test_vs_member"], sign=True),
                _lexical(c, r["dataset"]),
            ]
            for _, r in chosen.iterrows()
        ],
    )
    with_row = set(zip(chosen["dataset"], chosen["pair"], strict=True))
    unfinished = sorted(set(zip(cut["dataset"], cut["pair"], strict=True)) - with_row)
    if unfinished:
        doc.note(
            "Pairs with every fusion pruned (no row above): "
            + "; ".join(f"{display(d)} {p}" for d, p in unfinished)
            + "."
        )
    for dataset in sorted(set(c.fusion["dataset"]) | set(cut["dataset"])):
        sub, sub_cut = c.fusion[c.fusion["dataset"] == dataset], cut[cut["dataset"] == dataset]
        pairs = sorted(set(sub["pair"]) | set(sub_cut["pair"]))
        fusions = sorted(set(sub["fusion"]) | set(sub_cut["fusion"]))
        cells = {
            (r["fusion"], r["pair"]): f"pruned ({fmt(r['val_acc'])}){_other_preset(r['preset'])}"
            for _, r in sub_cut.iterrows()
        }
        for _, r in sub.iterrows():
            text = f"{fmt(r['val_acc'])} / {fmt(r['test_acc'])}{_other_preset(r['preset'])}"
            text = _mark(text, r["tied_with_best"] and not r["chosen"])
            cells[r["fusion"], r["pair"]] = Bold(text) if r["chosen"] else text
        doc.heading(f"Every fusion method on {display(dataset)}", 3)
        doc.table(
            ["fusion", *[f"{p} (val / test)" for p in pairs]],
            [[f, *[cells.get((f, p), "—") for p in pairs]] for f in fusions],
        )
    doc.note(
        "Each cell: validation / test accuracy of that fusion at the layers chosen on validation; bold: the "
        f"fusion chosen on validation for the pair; {TIED_MARK}: another fusion tied with the pair's best; "
        "(preset): the cell's best trial came from another preset (e.g. search), with its own layers and head; "
        "pruned (x): every trial of the cell was cut by the pruner, x the validation accuracy it last reported (no "
        "test score); —: not run."
    )


def _other_preset(preset: str) -> str:
    """`` (search)`` for a fusion-grid cell filled by another preset's trial; nothing for the grid's own."""
    return "" if preset == FUSION_METHODS else f" ({preset})"


def _multi_section(doc: Doc, c: Computed) -> None:
    doc.heading("Three or more models (Tables 5-6)")
    if c.multi.empty:
        doc.note("No runs with three or more models: run the `multi-model` preset to fill this section.")
        return
    multi = c.multi.sort_values(["dataset", "n_models", "models"])
    _table(
        doc,
        [
            "dataset",
            "models",
            "model set",
            "fusion (val-selected)",
            "layers (val-selected)",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "TF-IDF (test)",
            "vs TF-IDF (test)",
            "tied with best",
        ],
        [
            [
                display(r["dataset"]),
                str(r["n_models"]),
                ", ".join(display(m) for m in r["models"].split(",")),
                r["fusion"],
                r["layers_label"],
                fmt(r["val_acc"]),
                fmt(r["test_acc"]),
                fmt_units(r),
                _lexical(c, r["dataset"]),
                _vs_lexical(c, r["dataset"], r["test_acc"]),
                _tied(r["tied_with_best"]) if (multi["dataset"] == r["dataset"]).sum() > 1 else "only set",
            ]
            for _, r in multi.iterrows()
        ],
    )
    doc.note(
        "One row per dataset and model set: the fusion method and layers chosen on validation for that set; tied "
        "with best: within one standard error of the dataset's best model set on validation."
    )


def _ttest(t: dict[str, Any] | None) -> str:
    return f"Δ={fmt(t['mean_diff'], sign=True)}, t={fmt(t['t'], 2)}, p={fmt(t['p_value'])} (n={t['n']})" if t else "—"


def _refit_cell(refit: dict[str, Any] | None) -> str:
    """The refits' test accuracies, paired t-test and McNemar per seed, or a dash without both refits."""
    if refit is None:
        return "—"
    tests = [_ttest(refit["paired_t"]), _mcnemar_cell(refit["mcnemar"], 1)]
    return f"{fmt(refit['a_test_acc'])} vs {fmt(refit['b_test_acc'])}; " + "; ".join(t for t in tests if t != "—")


def _mcnemar_cell(tests: list[dict[str, Any]], folds: int) -> str:
    """One ``unit: only a vs only b, p`` entry per common unit (its fold named where there are folds)."""
    cells = []
    for m in tests:
        unit = f"fold {m['fold']} seed {m['seed']}" if folds > 1 else f"seed {m['seed']}"
        cells.append(f"{unit}: {m['only_a']} vs {m['only_b']}, p={fmt(m['p_value'])}")
    return "; ".join(cells) or "—"


def _baseline_section(doc: Doc, c: Computed) -> None:
    doc.heading("Lexical baseline: TF-IDF word 1-2 grams")
    if c.baseline.empty:
        doc.note(
            "No baseline runs: run the `tfidf-baseline` preset on the same dataset to fill this section and the "
            "TF-IDF columns of every table."
        )
        return
    doc.note(
        "Fitted on the same train part and validated on the same rows as the neural heads; the classifier and "
        "C are chosen on validation (bold) and its test accuracy fills the TF-IDF column of every table."
    )
    _table(
        doc,
        ["dataset", "classifier", "C", "val acc", "test acc (test)", "test over units (test)", "tied with best"],
        [
            [
                display(r["dataset"]),
                BASELINE_NAMES.get(r["classifier"], r["classifier"]),
                f"{r['C']:g}",
                (Bold if r["chosen"] else str)(fmt(r["val_acc"])),
                fmt(r["test_acc"]),
                fmt_units(r),
                _tied(r["tied_with_best"]),
            ]
            for _, r in c.baseline.iterrows()
        ],
    )


def _stats_section(doc: Doc, c: Computed) -> None:
    doc.heading("Best fusion vs best single model (paired tests)")
    if not c.paired:
        doc.note("Needs both single-model and multi-model runs on a dataset.")
        return
    rows = [
        [
            display(p["dataset"]),
            p["fusion"],
            fmt(p["fusion_test_acc"]),
            p["single"],
            fmt(p["single_test_acc"]),
            _ttest(p["paired_t"]),
            _mcnemar_cell(p["mcnemar"], p["folds"]),
            _refit_cell(p["refit"]),
        ]
        for p in c.paired
    ]
    doc.table(
        [
            "dataset",
            "best fusion (val-selected)",
            "fusion (test)",
            "best single (val-selected)",
            "single (test)",
            "paired t-test over units (test)",
            "McNemar exact (test): only fusion right vs only single right",
            "refits on all train: fusion vs single, t-test and McNemar per seed (test)",
        ],
        rows,
    )
    for p in c.paired:
        for note in p["notes"]:
            doc.note(f"{display(p['dataset'])}: {note}.")
    versus = [(p["dataset"], v) for p in c.paired for v in p["vs_baseline"]]
    if versus:
        doc.heading("Against the TF-IDF baseline (paired tests)", 3)
        doc.table(
            [
                "dataset",
                "which",
                "configuration (val-selected)",
                "test acc (test)",
                "TF-IDF (val-selected C)",
                "TF-IDF (test)",
                "paired t-test over units (test)",
                "McNemar exact (test): only model right vs only TF-IDF right",
                "refits on all train: model vs TF-IDF, t-test and McNemar per seed (test)",
            ],
            [
                [
                    display(d),
                    v["name"],
                    v["config"],
                    fmt(v["test_acc"]),
                    v["baseline"],
                    fmt(v["baseline_test_acc"]),
                    _ttest(v["paired_t"]),
                    _mcnemar_cell(v["mcnemar"], v["folds"]),
                    _refit_cell(v["refit"]),
                ]
                for d, v in versus
            ],
        )


def _cost_section(doc: Doc, c: Computed, data: ReportData, folder: Path, files: list[Path]) -> None:
    doc.heading("Cost (Sec. 5.4) and accuracy vs cost")
    if c.cost.empty:
        doc.note("No run measured its cost (layer sweeps do not): run the `search` or `fusion-methods` preset.")
        return
    doc.note(
        "Runs that measured their cost; layer sweeps train every layer at once and are left out here. Tied with best "
        "(all runs): within one standard error of the dataset's best configuration over every finished run."
    )
    tied = set(c.overall.loc[c.overall["tied_with_best"].astype(bool), "run_id"])
    _table(
        doc,
        [
            "dataset",
            "models",
            "best configuration (val-selected)",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "fused dim",
            "feature MiB",
            "extract ms/sample",
            "head ms/sample",
            "tied with best (all runs)",
        ],
        [
            [
                display(r["dataset"]),
                str(r["n_models"]),
                r["config"],
                fmt(r["val_acc"]),
                fmt(r["test_acc"]),
                fmt_units(r),
                fmt(r["fused_dim"], 0),
                fmt(r["feature_mib"], 2),
                fmt(r["extract_ms_per_sample"], 3),
                fmt(r["head_ms_per_sample"], 4),
                _tied(r["run_id"] in tied),
            ]
            for _, r in c.cost.iterrows()
        ],
    )
    runs = costed(data)
    _figure(
        doc,
        plots.cost_vs_models(runs),
        folder,
        "cost_vs_models.png",
        "Fused dimension, feature memory, extraction and head time per sample vs number of models "
        "(every costed trial; lines join the medians).",
        files,
    )
    _figure(
        doc,
        plots.acc_vs_cost(runs, c.pareto),
        folder,
        "acc_vs_cost.png",
        "Accuracy vs feature memory: the Pareto front is chosen on validation (left) and shown with the same "
        "runs' test scores (right).",
        files,
    )
    doc.heading("Pareto front (validation accuracy vs feature memory)", 3)
    _table(
        doc,
        [
            "dataset",
            "configuration",
            "feature MiB",
            "extract ms/sample",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "tied with best (all runs)",
        ],
        [
            [
                display(r["dataset"]),
                r["config"],
                fmt(r["feature_mib"], 2),
                fmt(r["extract_ms_per_sample"], 3),
                fmt(r["val_acc"]),
                fmt(r["test_acc"]),
                fmt_units(r),
                _tied(r["run_id"] in tied),
            ]
            for _, r in c.pareto.iterrows()
        ],
    )


def build(data: ReportData, c: Computed, folder: Path, title: str) -> tuple[Doc, list[Path]]:
    """Lay out the report, writing each figure as a PNG into ``folder``; return the document and the PNG paths."""
    doc = Doc(title)
    files: list[Path] = []
    _intro(doc, data)
    doc.note(units_summary(c.overall, c.points))
    _best_section(doc, c)
    _baseline_section(doc, c)
    _layer_section(doc, c, folder, files)
    _last_k_section(doc, c, folder, files)
    _fusion_section(doc, c, folder, files)
    _multi_section(doc, c)
    _stats_section(doc, c)
    _cost_section(doc, c, data, folder, files)
    states = sorted({s for v in data.counts.values() for s in v})
    doc.heading("Trials per study")
    doc.table(
        ["study", *states], [[study, *[str(v.get(s, 0)) for s in states]] for study, v in sorted(data.counts.items())]
    )
    return doc, files
