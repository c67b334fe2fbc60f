"""The ``layerfuse`` command line: a thin layer that builds a config and calls the core functions.

This module parses and dispatches; the commands are ``benchmark.cli.stages`` (the pipeline's stages),
``benchmark.cli.use`` (using a study's choice) and ``benchmark.cli.browse`` (``ui``, ``ls``).

User mistakes end with one ``layerfuse: error: ...`` line and exit code 2 (a traceback only with ``-v``).
Heavy imports (torch, transformers, mlflow) happen inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from benchmark.cli import browse, stages, use
from benchmark.cli.args import Parser, quiet_warnings
from benchmark.core.allocator import keep_freed_memory
from benchmark.core.config import BenchConfig, load_config
from benchmark.core.errors import UserError
from benchmark.core.faults import caused_by_interrupt, fault_line, interrupt_on_sigterm
from benchmark.core.tracking import artifact_bars

log = logging.getLogger("layerfuse")

Handler = Callable[[argparse.Namespace, BenchConfig], int]


def version() -> str:
    """The installed layerfuse version (``layerfuse --version``)."""
    import importlib.metadata as md

    try:
        return md.version("layerfuse")
    except md.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = Parser(prog="layerfuse", description="Layer-aware embedding fusion benchmarks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the order of `layerfuse --help`: the pipeline's stages, then using a study's choice, then browsing
    for add in (*stages.ADDERS, *use.ADDERS, *browse.ADDERS):
        add(sub)
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
    """Names the config holds whose registries live above the config's layer (raises ``UnknownNameError``).

    Checked before any handler imports torch or Lightning, so a misspelt name is refused at once.
    """
    from benchmark.core.models import check_model_name
    from benchmark.core.text_data import check_dataset_name
    from lightning_modules.fusion_index import check_fusion
    from studies.trials.presets import PRESETS, check_fusions

    if cfg.extract.pooling is not None:
        from extractors.pooling import POOLINGS

        POOLINGS.get(cfg.extract.pooling)
    for preset in (cfg.study.preset, *cfg.pipeline.presets):
        PRESETS.get(preset)
    for model in cfg.extract.models:
        check_model_name(model)
    for dataset in (cfg.extract.dataset, *cfg.pipeline.datasets):
        check_dataset_name(dataset)
    check_fusion(cfg.train.fusion, "train.fusion (--fusion)")
    check_fusions(cfg.study.fusions)


def _interrupted() -> int:
    print("layerfuse: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``layerfuse`` and ``python -m benchmark``; returns the exit code."""
    keep_freed_memory()  # before torch allocates anything; the study workers and torchrun ranks inherit it
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
    quiet_warnings(args.verbose)
    try:
        with interrupt_on_sigterm():
            cfg = load_config(args.config or getattr(args, "default_config", None), args.sets, **_flag_values(args))
            _check_registered_names(cfg)
            handler: Handler = args.func
            with artifact_bars(cfg.extract.show_progress):
                return handler(args, cfg)
    except UserError as err:
        if args.verbose:
            raise
        print(f"layerfuse: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as err:
        if caused_by_interrupt(err) and not args.verbose:  # an interrupt that landed in a library's clean-up
            return _interrupted()
        line = fault_line(err)  # a full disk, a read-only folder, a corrupt database: the machine, not a bug
        if line is None or args.verbose:
            raise
        print(f"layerfuse: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
