"""``layerfuse extract | study | fit | report | quickstart | reproduce``: the pipeline's stages, one or all.

Each command is an ``add_*`` (its parser) and a ``run_*`` (its handler); ``benchmark.cli`` dispatches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmark.cli.args import batch_size, csv_list, positive_int, quiet_transformers, subparser
from benchmark.core.config import BenchConfig
from benchmark.core.errors import UserError
from studies.trials.presets import PRESETS

# ---------------------------------------------------------------- extract


def add_extract(sub: Any) -> None:
    """``layerfuse extract``."""
    p = subparser(
        sub,
        "extract",
        "Extract and cache the pooled hidden states of every layer.",
        "examples:\n  layerfuse extract --model minilm-l6 --dataset mr\n"
        "  layerfuse extract --model smollm2-135m,minilm-l6 --dataset sst2 --split train,test --limit 2000\n"
        "  layerfuse extract --model ./my-model --dataset data/reviews_{split}.csv --set data.text_column=body\n"
        "  torchrun --nproc-per-node 4 -m benchmark extract --model llama2-7b --dataset sst2  # 4 GPUs or processes\n"
        "  layerfuse extract --model minilm-l6 --dataset mr --shard 0/4  # job 0 of 4; the last one completes",
    )
    p.add_argument(
        "--model", "-m", type=csv_list, action="append", help="model alias, hub id or folder (comma list, repeatable)"
    )
    p.add_argument("--dataset", "-d", help="sst2|mr|r8|r52, a folder/file of split files, or a hub dataset id")
    p.add_argument("--split", type=csv_list, help="splits, e.g. train,test")
    p.add_argument("--limit", type=positive_int, help="seeded random subset of N rows per split")
    p.add_argument("--max-length", type=positive_int, help="max tokens per text (default: the model's)")
    p.add_argument("--pooling", help="mean|last_token|cls|max (default: the model's)")
    p.add_argument("--dtype", help="auto|fp32|bf16|fp16")
    p.add_argument("--batch-size", type=batch_size, help="auto or texts per batch")
    p.add_argument("--device", help="auto|cpu|cuda")
    p.add_argument("--overwrite", help="missing (default)|always|never")
    p.add_argument("--shard", metavar="I/N", help="compute only shard I of N (job arrays; not under torchrun)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(
        func=run_extract,
        flag_keys={
            "model": "extract.models",
            "dataset": "extract.dataset",
            "split": "extract.splits",
            "limit": "extract.limit",
            "max_length": "extract.max_length",
            "pooling": "extract.pooling",
            "dtype": "extract.dtype",
            "batch_size": "extract.batch_size",
            "device": "extract.device",
            "overwrite": "extract.overwrite",
            "shard": "extract.shard",
        },
    )


def run_extract(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``extract``."""
    from extractors.run import extract_all

    if not args.verbose:
        quiet_transformers()
    summaries = extract_all(cfg, track=True)
    new = [s for s in summaries if not s.cached]
    seconds = sum(s.seconds for s in new)
    tokens = sum(s.tokens for s in new)
    # A rerun that only assembles chunks an interrupted run finished does no model work: no rate to show.
    rate = f", {tokens:,} tokens at {tokens / seconds:,.0f} tokens/s in {seconds:.1f}s" if seconds > 0 else ""
    waiting = sum(not s.complete for s in summaries)
    rest = f" ({waiting} wait for other shards: the last to finish completes them)" if waiting else ""
    print(
        f"extracted {len(summaries)} model x split: {len(summaries) - len(new)} cached, {len(new)} new{rest}{rate}; "
        f"cache: {cfg.paths.cache_dir}"
    )
    return 0


# ---------------------------------------------------------------- study


def _preset_lines() -> str:
    return "\n".join(f"  {name:15} {p.description}" for name, p in PRESETS.items())


def add_study(sub: Any) -> None:
    """``layerfuse study``."""
    p = subparser(
        sub,
        "study",
        "Run (or resume) an Optuna study over cached features, tracked in MLflow.",
        "examples:\n  layerfuse study --preset layer-sweep --dataset mr --models smollm2-135m,minilm-l6\n"
        "  layerfuse study --preset search --dataset mr --models smollm2-135m,minilm-l6 --trials 50 --workers 2\n"
        "  layerfuse study --preset search --dataset r8 --models a,b --storage postgresql://u:pw@host/db  # on each "
        "host\n"
        "Re-running the same command resumes the study.\n\npresets (layerfuse ls presets):\n" + _preset_lines(),
    )
    p.add_argument("--preset", "-p", help="|".join(PRESETS.names()) + " (default search)")
    p.add_argument("--dataset", "-d", help="dataset whose features are cached (as for extract)")
    p.add_argument("--models", "-m", type=csv_list, help="comma list of models (their caches must exist)")
    p.add_argument("--trials", "-n", type=positive_int, help="finished trials to reach (sampled presets)")
    p.add_argument("--name", help="study name (default: <preset>-<dataset>-<model+model>)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///mlruns/optuna.db)")
    p.add_argument("--workers", "-j", type=positive_int, help="worker processes on this machine")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seeds", type=positive_int, help="seeds per configuration")
    p.add_argument("--no-pruning", action="store_true", help="disable pruning (study.pruner: median or threshold:X)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(
        func=run_study,
        flag_keys={
            "preset": "study.preset",
            "dataset": "extract.dataset",
            "models": "extract.models",
            "trials": "study.trials",
            "name": "study.name",
            "storage": "study.storage",
            "workers": "study.workers",
            "timeout": "study.timeout",
            "seeds": "study.seeds",
        },
    )


def run_study(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``study``."""
    import optuna

    from studies.run.runner import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = run_study(cfg)
    print(f"study {out.name}: {out.complete} complete, {out.pruned} pruned, {out.failed} failed")
    if out.best_number is not None:
        test = f", test acc {out.best_test_acc:.4f}" if out.best_test_acc is not None else ""
        params = " ".join(f"{k}={v}" for k, v in sorted(out.best_params.items()))
        print(f"best trial #{out.best_number}: val acc {out.best_value:.4f}{test}  {params}")
    if out.result_test_acc is not None:
        print(f"result: refit on all training rows, test acc {out.result_test_acc:.4f} (run {out.result_run_id})")
    print(f"browse it: layerfuse ui   (MLflow experiment '{out.experiment}', parent run {out.parent_run_id})")
    return 0


# ---------------------------------------------------------------- fit


def _layer_pair(text: str) -> tuple[str, str]:
    model, sep, spec = text.rpartition("=")
    if not sep or not model or not spec:
        raise argparse.ArgumentTypeError(
            f"invalid --layer {text!r}: use MODEL=SPEC, e.g. smollm2-135m=16 or minilm-l6=mean:last4"
        )
    return model, spec


def add_fit(sub: Any) -> None:
    """``layerfuse fit``."""
    p = subparser(
        sub,
        "fit",
        "Train and score one configuration on cached features (no study), once per unit (fold x seed).",
        "examples:\n  layerfuse fit --dataset mr --layer smollm2-135m=16\n"
        "  layerfuse fit --dataset mr --layer smollm2-135m=14 --layer minilm-l6=mean:last3 --fusion residual:sum "
        "--seeds 3\n"
        "  layerfuse fit --dataset mr --layer smollm2-135m=14 --seeds 3 --set data.cv_folds=5   # 15 units",
    )
    p.add_argument("--dataset", "-d", help="dataset whose features are cached")
    p.add_argument(
        "--layer",
        type=_layer_pair,
        action="append",
        required=True,
        metavar="MODEL=SPEC",
        help="a model and its layer spec (16, -1, last, mean:last4, max:3,5,7); repeat for fusion",
    )
    p.add_argument("--fusion", help="fusion name (layerfuse ls fusions)")
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="fits with train.seed + k, k < seeds (on every fold with data.cv_folds)",
    )
    p.set_defaults(func=run_fit, flag_keys={"dataset": "extract.dataset", "fusion": "train.fusion"})


def run_fit(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``fit``."""
    from benchmark.core.tracking import experiment_name
    from lightning_modules.folds import units
    from studies.trials.fit import fit_tracked

    layers: dict[str, str] = {}
    for model, spec in args.layer:
        if model in layers:  # a dict would keep only the last one and train on it alone
            plain = all(s.lstrip("-").isdigit() for s in (layers[model], spec))
            both = f"{layers[model]},{spec}" if plain else "3,5"
            raise UserError(
                f"--layer {model}={spec} repeats model '{model}' (already --layer {model}={layers[model]}): give one "
                f"spec per model; to combine layers of one model aggregate them, e.g. --layer {model}=mean:{both}"
            )
        layers[model] = spec
    run_id, results = fit_tracked(cfg, layers, args.seeds)
    for unit, r in zip(units(cfg.data.cv_folds, args.seeds), results, strict=True):
        fold = f"fold {unit.fold} " if cfg.data.cv_folds else ""
        print(
            f"{fold}seed {cfg.train.seed + unit.seed}: val acc {r.val_acc:.4f}  val f1 {r.val_f1:.4f}  test acc "
            f"{r.test_acc:.4f}  test f1 {r.test_f1:.4f}  ({r.epochs} epochs, best {r.best_epoch}, {r.fit_s:.1f}s)"
        )
    if len(results) > 1:
        import statistics

        from lightning_modules.folds import mean_se

        accs = [r.test_acc for r in results]
        what = "units (fold x seed)" if cfg.data.cv_folds else "seeds"
        print(f"test acc mean {statistics.fmean(accs):.4f} +- {statistics.stdev(accs):.4f} over {len(accs)} {what}")
        val, se = mean_se([r.val_acc for r in results])
        print(f"val acc mean {float(val):.4f} +- {float(se):.4f} (standard error, val/acc_se)")
    print(f"tracked: MLflow run {run_id} in experiment '{experiment_name(cfg.extract.dataset)}' (layerfuse ui)")
    return 0


# ---------------------------------------------------------------- report


def add_report(sub: Any) -> None:
    """``layerfuse report``."""
    p = subparser(
        sub,
        "report",
        "Export best-layer, fusion and cost tables and figures of studies, read back from MLflow.",
        "examples:\n  layerfuse report --study layer-sweep-mr-smollm2-135m+minilm-l6\n"
        "  layerfuse report --study a,b --out reports/both --format md,html --force\n"
        "  layerfuse report --experiment layerfuse/mr --set tracking.uri=sqlite:///other/mlflow.db\n\n"
        "Reports read MLflow only (tracking.uri), where every trial is logged, so there is no --storage:\n"
        "the Optuna storage holds nothing a report needs.",
    )
    p.add_argument("--study", type=csv_list, action="append", help="study name(s) (comma list, repeatable)")
    p.add_argument("--experiment", type=csv_list, action="append", help="every study in these MLflow experiments")
    p.add_argument("--out", help="output folder (default: report.out_dir/<name>)")
    p.add_argument("--format", type=csv_list, help="md,html")
    p.add_argument("--force", action="store_true", help="overwrite an existing report folder")
    p.set_defaults(func=run_report, flag_keys={"format": "report.formats"})


def run_report(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``report``."""
    from benchmark.report import write_report

    studies = tuple(s for group in args.study or () for s in group)
    experiments = tuple(e for group in args.experiment or () for e in group)
    if not studies and not experiments:
        raise UserError(
            "name what to report: --study NAME (see `layerfuse ui` or the study's output) or --experiment "
            "layerfuse/<dataset>"
        )
    result = write_report(
        cfg, studies=studies, experiments=experiments, out_dir=args.out, formats=cfg.report.formats, force=args.force
    )
    print(f"report written to {result.out_dir}: " + ", ".join(Path(f).name for f in result.files))
    return 0


# ---------------------------------------------------------------- quickstart, reproduce


def packaged_config(name: str) -> str:
    """Path of a config shipped in ``studies/configs``."""
    import studies

    return str(Path(studies.__file__).parent / "configs" / f"{name}.yaml")


def add_quickstart(sub: Any) -> None:
    """``layerfuse quickstart``."""
    p = subparser(
        sub,
        "quickstart",
        "The main job on the embedded defaults: extract, layer sweep, search study, report.",
        "examples:\n  layerfuse quickstart\n  layerfuse quickstart --set extract.limit=500 --set study.trials=8\n"
        "Steps are cached or resumed: rerunning finishes what an interrupted run left.",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_pipeline, flag_keys={}, default_config=packaged_config("quickstart"))


def add_reproduce(sub: Any) -> None:
    """``layerfuse reproduce``."""
    p = subparser(
        sub,
        "reproduce",
        "The paper's experiments per dataset (TF-IDF baseline, layer sweep, last-k, fusion "
        "methods, multi-model, search) over seeds (and folds with data.cv_folds), then one report across the datasets.",
        "examples:\n  layerfuse reproduce\n  layerfuse reproduce --datasets mr,r8 --seeds 3\n"
        "  layerfuse reproduce --datasets mr --limit 1000 --seeds 1 --trials 8   # a quick look\n"
        "Every stage is cached or resumed: rerunning finishes what an interrupted run left.",
    )
    p.add_argument("--datasets", type=csv_list, help="comma list (default: sst2,mr,r8,r52)")
    p.add_argument("--models", "-m", type=csv_list, help="comma list of models (default: the embedded ones and tfidf)")
    p.add_argument("--seeds", type=positive_int, help="seeds per configuration (default 3)")
    p.add_argument("--trials", "-n", type=positive_int, help="trials of the search preset")
    p.add_argument("--limit", type=positive_int, help="seeded random subset of N rows per split")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(
        func=run_pipeline,
        default_config=packaged_config("reproduce"),
        flag_keys={
            "datasets": "pipeline.datasets",
            "models": "extract.models",
            "seeds": "study.seeds",
            "trials": "study.trials",
            "limit": "extract.limit",
        },
    )


def run_pipeline(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``quickstart`` and ``reproduce``."""
    import optuna

    from benchmark.pipeline import run_pipeline

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.verbose:
        quiet_transformers()  # as in extract: the bars kept are one per long step (GGUF conversion, extraction)
    print(
        f"{args.command}: datasets {', '.join(cfg.pipeline.datasets)}; models {', '.join(cfg.extract.models)}; "
        f"stages extract, {', '.join(cfg.pipeline.presets)}, report; {cfg.study.seeds} seed(s)",
        flush=True,
    )
    start = time.perf_counter()
    result = run_pipeline(
        cfg, on_stage=lambda s: print(f"[{s.seconds:7.1f}s] {s.dataset} {s.stage}: {s.outcome}", flush=True)
    )
    assert result.report is not None
    print(f"report: {result.report.out_dir}/report.html (also report.md, best_layers.csv, summary.json, stages.csv)")
    took = f"{args.command} took {_duration(time.perf_counter() - start)}"
    if any(s.sittings > 1 for s in result.stages):  # a resumed run: what the whole run cost is the stages' sum
        took += f" (this sitting; {_duration(sum(s.seconds for s in result.stages))} of stage time in all, stages.csv)"
    print_answer(result.report.summary.get("answer", []), took)
    return 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def print_answer(answers: list[dict[str, Any]], done: str) -> None:
    """The end of a pipeline run: its time, then per dataset the answer its report opens with and what to run next."""
    from benchmark.report.answer.section import answer_lines, next_steps

    print(f"\n{done}. The answer:")
    if not answers:
        print("  no configuration to ship: no trial of a feature preset finished")
    for a in answers:
        head, *rest = answer_lines(a)
        print(f"  {head}")
        for line in rest:
            print(f"    {line}")
    for a in answers:
        steps = next_steps(a)
        print(f"next: {steps[0]}")
        for step in steps[1:]:
            print(f"      {step}")
    print("browse every trial: layerfuse ui")


ADDERS = (add_extract, add_study, add_fit, add_report, add_quickstart, add_reproduce)
