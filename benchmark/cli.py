"""The ``layerfuse`` command line: a thin layer that builds a config and calls the core functions.

User mistakes end with one ``layerfuse: error: ...`` line and exit code 2 (a traceback only with ``-v``).
Heavy imports (torch, transformers, mlflow) happen inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from benchmark.core.config import BenchConfig, load_config
from benchmark.core.errors import UserError

log = logging.getLogger("layerfuse")

Handler = Callable[[argparse.Namespace, BenchConfig], int]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other user error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        """Print one ``layerfuse ...: error:`` line pointing at ``--help`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _batch_size(text: str) -> int:
    """``auto`` (0) or a positive integer."""
    if text == "auto":
        return 0
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"invalid batch size {text!r}: use auto or a positive integer") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML config file (section: {field: value})")
    parser.add_argument(
        "-s",
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=3e-4 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")


def _subparser(sub: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common(parser)
    return parser


def _quiet_transformers() -> None:
    """Hide transformers' weight-loading bars; our own per model x split bar is the one that matters."""
    from transformers.utils import logging as hf_logging

    # transformers leaves these two unannotated
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- extract


def _add_extract(sub: Any) -> None:
    p = _subparser(
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
        "--model", "-m", type=_csv, action="append", help="model alias, hub id or folder (comma list, repeatable)"
    )
    p.add_argument("--dataset", "-d", help="sst2|mr|r8|r52, a folder/file of split files, or a hub dataset id")
    p.add_argument("--split", type=_csv, help="splits, e.g. train,test")
    p.add_argument("--limit", type=_positive_int, help="seeded random subset of N rows per split")
    p.add_argument("--max-length", type=_positive_int, help="max tokens per text (default: the model's)")
    p.add_argument("--pooling", help="mean|last_token|cls|max (default: the model's)")
    p.add_argument("--dtype", help="auto|fp32|bf16|fp16")
    p.add_argument("--batch-size", type=_batch_size, help="auto or texts per batch")
    p.add_argument("--device", help="auto|cpu|cuda")
    p.add_argument("--overwrite", help="missing (default)|always|never")
    p.add_argument("--shard", metavar="I/N", help="compute only shard I of N (job arrays; not under torchrun)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(
        func=_run_extract,
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


def _run_extract(args: argparse.Namespace, cfg: BenchConfig) -> int:
    from extractors.run import extract_all

    if not args.verbose:
        _quiet_transformers()
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


def _add_study(sub: Any) -> None:
    p = _subparser(
        sub,
        "study",
        "Run (or resume) an Optuna study over cached features, tracked in MLflow.",
        "examples:\n  layerfuse study --preset layer-sweep --dataset mr --models smollm2-135m,minilm-l6\n"
        "  layerfuse study --preset search --dataset mr --models smollm2-135m,minilm-l6 --trials 50 --workers 2\n"
        "  layerfuse study --preset search --dataset r8 --models a,b --storage postgresql://u:pw@host/db  # on each "
        "host\n"
        "Re-running the same command resumes the study. Presets: layerfuse ls presets.",
    )
    p.add_argument("--preset", "-p", help="layer-sweep|last-k|fusion-methods|multi-model|search")
    p.add_argument("--dataset", "-d", help="dataset whose features are cached (as for extract)")
    p.add_argument("--models", "-m", type=_csv, help="comma list of models (their caches must exist)")
    p.add_argument("--trials", "-n", type=_positive_int, help="finished trials to reach (sampled presets)")
    p.add_argument("--name", help="study name (default: <preset>-<dataset>-<model+model>)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///mlruns/optuna.db)")
    p.add_argument("--workers", "-j", type=_positive_int, help="worker processes on this machine")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seeds", type=_positive_int, help="seeds per configuration")
    p.add_argument("--no-pruning", action="store_true", help="disable pruning (study.pruner: median or threshold:X)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(
        func=_run_study,
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


def _run_study(args: argparse.Namespace, cfg: BenchConfig) -> int:
    import optuna

    from studies.runner import run_study

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


def _add_fit(sub: Any) -> None:
    p = _subparser(
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
        type=_positive_int,
        default=1,
        help="fits with train.seed + k, k < seeds (on every fold with data.cv_folds)",
    )
    p.set_defaults(func=_run_fit, flag_keys={"dataset": "extract.dataset", "fusion": "train.fusion"})


def _run_fit(args: argparse.Namespace, cfg: BenchConfig) -> int:
    from benchmark.core.tracking import experiment_name
    from lightning_modules.folds import units
    from studies.fit import fit_tracked

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


def _add_report(sub: Any) -> None:
    p = _subparser(
        sub,
        "report",
        "Export best-layer, fusion and cost tables and figures of studies, read back from MLflow.",
        "examples:\n  layerfuse report --study layer-sweep-mr-smollm2-135m+minilm-l6\n"
        "  layerfuse report --study a,b --out reports/both --format md,html --force\n"
        "  layerfuse report --experiment layerfuse/mr --set tracking.uri=sqlite:///other/mlflow.db\n\n"
        "Reports read MLflow only (tracking.uri), where every trial is logged, so there is no --storage:\n"
        "the Optuna storage holds nothing a report needs.",
    )
    p.add_argument("--study", type=_csv, action="append", help="study name(s) (comma list, repeatable)")
    p.add_argument("--experiment", type=_csv, action="append", help="every study in these MLflow experiments")
    p.add_argument("--out", help="output folder (default: report.out_dir/<name>)")
    p.add_argument("--format", type=_csv, help="md,html")
    p.add_argument("--force", action="store_true", help="overwrite an existing report folder")
    p.set_defaults(func=_run_report, flag_keys={"format": "report.formats"})


def _run_report(args: argparse.Namespace, cfg: BenchConfig) -> int:
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


# ---------------------------------------------------------------- ui


def _add_ui(sub: Any) -> None:
    p = _subparser(
        sub,
        "ui",
        "Start the MLflow UI on 127.0.0.1 against the configured tracking store (one web worker, no job runner).",
        "examples:\n  layerfuse ui\n  layerfuse ui --port 5001 --workers 2\n"
        "Optuna's own view of a study: optuna-dashboard sqlite:///mlruns/optuna.db",
    )
    p.add_argument("--port", type=_positive_int, default=5000, help="port on 127.0.0.1")
    p.add_argument("--workers", type=_positive_int, default=1, help="web worker processes (MLflow's default: 4)")
    p.set_defaults(func=_run_ui, flag_keys={})


# MLflow's job runner serves GenAI jobs (judges, trace scans) that layerfuse never submits; it costs processes.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def ui_command(cfg: BenchConfig, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow ui`` command line for the configured store, bound to loopback (run it with ``UI_ENV``)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        cfg.tracking.uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def _run_ui(args: argparse.Namespace, cfg: BenchConfig) -> int:
    import os

    from benchmark.core.stores import check_port_free, check_tracking
    from benchmark.core.tracking import client

    check_tracking(cfg.tracking)
    check_port_free("127.0.0.1", args.port)
    client(cfg.tracking)  # creates the store's folder so the UI starts on a fresh checkout
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {cfg.tracking.uri}); Ctrl-C to stop", flush=True)
    cmd = ui_command(cfg, args.port, args.workers)
    os.execve(cmd[0], cmd, {**os.environ, **UI_ENV})  # become the server, so Ctrl-C and signals reach it directly


# ---------------------------------------------------------------- quickstart, reproduce


def packaged_config(name: str) -> str:
    """Path of a config shipped in ``studies/configs``."""
    import studies

    return str(Path(studies.__file__).parent / "configs" / f"{name}.yaml")


def _add_quickstart(sub: Any) -> None:
    p = _subparser(
        sub,
        "quickstart",
        "The main job on the embedded defaults: extract, layer sweep, search study, report.",
        "examples:\n  layerfuse quickstart\n  layerfuse quickstart --set extract.limit=500 --set study.trials=8\n"
        "Steps are cached or resumed: rerunning finishes what an interrupted run left.",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_pipeline, flag_keys={}, default_config=packaged_config("quickstart"))


def _add_reproduce(sub: Any) -> None:
    p = _subparser(
        sub,
        "reproduce",
        "The paper's experiments per dataset (TF-IDF baseline, layer sweep, last-k, fusion "
        "methods, multi-model, search) over seeds (and folds with data.cv_folds), then one report across the datasets.",
        "examples:\n  layerfuse reproduce\n  layerfuse reproduce --datasets mr,r8 --seeds 3\n"
        "  layerfuse reproduce --datasets mr --limit 1000 --seeds 1 --trials 8   # a quick look\n"
        "Every stage is cached or resumed: rerunning finishes what an interrupted run left.",
    )
    p.add_argument("--datasets", type=_csv, help="comma list (default: sst2,mr,r8,r52)")
    p.add_argument("--models", "-m", type=_csv, help="comma list of models (default: the embedded ones and tfidf)")
    p.add_argument("--seeds", type=_positive_int, help="seeds per configuration (default 3)")
    p.add_argument("--trials", "-n", type=_positive_int, help="trials of the search preset")
    p.add_argument("--limit", type=_positive_int, help="seeded random subset of N rows per split")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(
        func=_run_pipeline,
        default_config=packaged_config("reproduce"),
        flag_keys={
            "datasets": "pipeline.datasets",
            "models": "extract.models",
            "seeds": "study.seeds",
            "trials": "study.trials",
            "limit": "extract.limit",
        },
    )


def _run_pipeline(args: argparse.Namespace, cfg: BenchConfig) -> int:
    import optuna

    from benchmark.pipeline import run_pipeline

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.verbose:
        _quiet_transformers()  # as in extract: the bars kept are one per long step (GGUF conversion, extraction)
    print(
        f"{args.command}: datasets {', '.join(cfg.pipeline.datasets)}; models {', '.join(cfg.extract.models)}; "
        f"stages extract, {', '.join(cfg.pipeline.presets)}, report; {cfg.study.seeds} seed(s)",
        flush=True,
    )
    result = run_pipeline(
        cfg, on_stage=lambda s: print(f"[{s.seconds:7.1f}s] {s.dataset} {s.stage}: {s.outcome}", flush=True)
    )
    assert result.report is not None
    print(f"report: {result.report.out_dir}/report.html (also report.md, best_layers.csv, summary.json, stages.csv)")
    print("browse every trial: layerfuse ui")
    return 0


# ---------------------------------------------------------------- ls


def _listing(what: str) -> list[tuple[str, str]]:
    if what == "models":
        from benchmark.core.models import MODELS

        return [
            (
                n,
                f"{s.kind:7} L={s.num_layers:<3} H={s.hidden_size:<5} pooling={s.default_pooling:<10} {s.hf_id}"
                + (f" (embedded: {s.local_dir})" if s.local_dir else ""),
            )
            for n, s in MODELS.items()
        ]
    if what == "poolings":
        from extractors.pooling import POOLINGS

        return [(n, (f.__doc__ or "").strip().splitlines()[0]) for n, f in POOLINGS.items()]
    if what == "datasets":
        from benchmark.core.text_data import DATASETS

        return [
            (n, f"<data_dir>/{s.folder}/{{train,test}}.csv" + (f"; hub: {s.hf_id}" if s.hf_id else ""))
            for n, s in DATASETS.items()
        ]
    if what == "fusions":
        from lightning_modules.components.fusion import FUSIONS, RESIDUAL_PREFIX

        return [(n, (f.__doc__ or "").strip().splitlines()[0]) for n, f in FUSIONS.items()] + [
            (f"{RESIDUAL_PREFIX}<name>", "any fusion plus a residual connection to the mean projected input")
        ]
    if what == "presets":
        from studies.presets import PRESETS

        return [(n, p.description) for n, p in PRESETS.items()]
    raise AssertionError(what)


LISTABLE = ("models", "poolings", "datasets", "fusions", "presets")


def _add_ls(sub: Any) -> None:
    p = _subparser(sub, "ls", "List registered entries.", "examples:\n  layerfuse ls models\n  layerfuse ls poolings")
    p.add_argument("what", choices=LISTABLE)
    p.set_defaults(func=_run_ls, flag_keys={})


def _run_ls(args: argparse.Namespace, cfg: BenchConfig) -> int:
    for name, text in _listing(args.what):
        print(f"{name:16} {text}")
    return 0


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = _Parser(prog="layerfuse", description="Layer-aware embedding fusion benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_extract, _add_study, _add_fit, _add_report, _add_ui, _add_quickstart, _add_reproduce, _add_ls):
        add(sub)
    from benchmark.cli_use import ADDERS  # refit, export, predict

    for add_use in ADDERS:
        add_use(sub, _subparser)
    return parser


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for flag, key in args.flag_keys.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "model":  # repeatable comma lists
            value = tuple(m for group in value for m in group)
        values[key] = value
    if getattr(args, "no_progress", False):
        values["extract.show_progress"] = False
    if getattr(args, "no_pruning", False):
        values["study.pruning"] = False
    return values


def _check_registered_names(cfg: BenchConfig) -> None:
    """Names the config holds whose registries live above the config's layer (raises ``UnknownNameError``)."""
    if cfg.extract.pooling is not None:
        from extractors.pooling import POOLINGS

        POOLINGS.get(cfg.extract.pooling)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``layerfuse`` and ``python -m benchmark``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        for noisy in ("httpx", "urllib3", "filelock", "transformers", "alembic", "numexpr", "mlflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # MLflow resets its logger's level when first imported (later, in a handler or a worker) from this variable.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        cfg = load_config(args.config or getattr(args, "default_config", None), args.sets, **_flag_values(args))
        _check_registered_names(cfg)
        handler: Handler = args.func
        return handler(args, cfg)
    except UserError as err:
        if args.verbose:
            raise
        print(f"layerfuse: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerfuse: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
