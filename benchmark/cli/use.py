"""``layerfuse refit | export | predict``: use a study's chosen configuration (see ``benchmark.cli`` for the rest)."""

from __future__ import annotations

import argparse
from typing import Any

from benchmark.cli.args import subparser
from benchmark.core.config import BenchConfig
from benchmark.core.errors import UserError


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def add_refit(sub: Any) -> None:
    """``layerfuse refit``."""
    p = subparser(
        sub,
        "refit",
        "Re-train a study's chosen configuration on all training rows (once per study seed), tracked in MLflow.",
        "examples:\n  layerfuse refit --study search-mr-smollm2-135m+minilm-l6\n"
        "  layerfuse refit --study NAME --trial 7\n"
        "A finished refit of the same trial is reused; --force runs it again.",
    )
    _choice(p)
    p.add_argument("--force", action="store_true", help="refit even when a finished refit run exists")
    p.set_defaults(func=run_refit, flag_keys={"storage": "study.storage"})


def _choice(p: argparse.ArgumentParser, study_required: bool = True) -> None:
    p.add_argument("--study", required=study_required, help="study name (as printed by layerfuse study)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=_int, help="trial number (default: the study's best trial)")
    which.add_argument("--run-id", help="a trial's MLflow run id (default: the study's best trial)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///mlruns/optuna.db)")


def run_refit(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``refit``."""
    from studies.choice.refit import refit_study

    r = refit_study(cfg, args.study, args.trial, args.run_id, force=args.force)
    accs = ", ".join(f"{a:.4f}" for a in r.test_acc)
    state = "reused" if r.reused else "new"
    print(f"refit of {r.study} trial #{r.trial} ({state} run {r.run_id}): {r.epochs} epochs, test acc per seed {accs}")
    print(f"  {r.fusion}: " + " ".join(f"{m}={s}" for m, s in r.layers.items()))
    return 0


def add_export(sub: Any) -> None:
    """``layerfuse export``."""
    p = subparser(
        sub,
        "export",
        "Export a study's chosen configuration (its refit head) as an MLflow pyfunc model that reads raw text.",
        "examples:\n  layerfuse export --report reports/quickstart --name mr-clf   # the report's answer\n"
        "  layerfuse export --study search-mr-smollm2-135m+minilm-l6 --name mr-clf\n"
        "  layerfuse export --study NAME --trial 7 --out exported/mr-clf --weights reference\n"
        "Then: layerfuse predict --model models:/mr-clf@champion --input new.csv --out scored.csv\n"
        "      MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db mlflow models serve -m models:/mr-clf@champion "
        "--env-manager local",
    )
    _choice(p, study_required=False)
    p.add_argument("--report", help="a report folder: export the configuration its answer names (instead of --study)")
    p.add_argument("--dataset", help="with --report over several datasets: the dataset whose answer to export")
    p.add_argument("--seed", type=_int, default=0, help="which refit seed's head (default 0)")
    p.add_argument("--name", help="register the model under this name in the MLflow Model Registry")
    p.add_argument("--alias", default="champion", help="registry alias set on the new version (default champion)")
    p.add_argument("--out", help="also save the model to this new folder")
    p.add_argument("--weights", default="copy", help="copy (cut weights in the model) or reference (path + hash)")
    p.set_defaults(func=run_export, flag_keys={"storage": "study.storage"})


def run_export(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``export``."""
    from benchmark.serve.model_export import export_model

    study, trial, run_id = _what_to_export(args, cfg)
    r = export_model(cfg, study, trial, run_id, args.seed, args.name, args.alias, args.out, args.weights)
    print(f"exported {r.model_uri} (refit run {r.refit_run_id}; {r.bundle_bytes / 2**20:.1f} MB of weights and head)")
    if r.registered:
        print(f"registered models:/{r.registered}/{r.version} as models:/{r.registered}@{args.alias}")
        # MLflow's own tools find the registry only through the tracking URI: print it in the command.
        print(
            f"serve it: MLFLOW_TRACKING_URI={cfg.tracking.uri} mlflow models serve "
            f"-m models:/{r.registered}@{args.alias} --env-manager local -p 5001"
        )
    if r.out:
        print(f"saved to {r.out}")
    return 0


def _what_to_export(args: argparse.Namespace, cfg: BenchConfig) -> tuple[str, int | None, str | None]:
    """(study, trial, run id) named by --study/--trial/--run-id, or by the answer of --report [--dataset]."""
    if args.report is None:
        if args.study is None:
            raise UserError("name what to export: --report DIR (a report's answer) or --study NAME [--trial N]")
        if args.dataset is not None:
            raise UserError("--dataset picks one answer of --report DIR: drop it, or use --report")
        return args.study, args.trial, args.run_id
    if args.study is not None or args.trial is not None or args.run_id is not None:
        raise UserError("--report names the configuration itself: drop --study, --trial and --run-id")
    from benchmark.report.answer.read import read_answer

    answer = read_answer(args.report, args.dataset, cfg.tracking.uri)
    print(f"exporting the answer of {args.report}: {answer['config']} ({answer['study']}, trial {answer['trial']})")
    return str(answer["study"]), None, str(answer["run_id"])


def add_predict(sub: Any) -> None:
    """``layerfuse predict``."""
    p = subparser(
        sub,
        "predict",
        "Classify the texts of a CSV/JSONL/Parquet file with an exported model.",
        "examples:\n  layerfuse predict --model models:/mr-clf@champion --input new.csv --out scored.csv\n"
        "  layerfuse predict --model exported/mr-clf --input reviews.parquet --text-column body --out scored.jsonl",
    )
    p.add_argument(
        "--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a folder"
    )
    p.add_argument("--input", required=True, help="CSV, JSONL or Parquet file")
    p.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    p.add_argument("--out", required=True, help="output file (.csv, .jsonl or .parquet)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict, flag_keys={})


def run_predict(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Handler of ``predict``."""
    import mlflow

    from benchmark.serve.predict import predict_file

    mlflow.set_tracking_uri(cfg.tracking.uri)  # models:/ URIs resolve in the configured registry
    r = predict_file(args.model, args.input, args.out, args.text_column, cfg.extract.show_progress)
    counts = ", ".join(f"{k} {v}" for k, v in r.label_counts.items())
    print(f"wrote {r.rows} rows to {r.out} ({counts})")
    return 0


ADDERS = (add_refit, add_export, add_predict)
