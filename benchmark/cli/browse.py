"""``layerfuse ui | ls``: browse what there is, the tracked runs in MLflow's UI and the registered names."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from benchmark.cli.args import positive_int, subparser
from benchmark.core.config import BenchConfig

# ---------------------------------------------------------------- ui


def _add_ui(sub: Any) -> None:
    p = subparser(
        sub,
        "ui",
        "Start the MLflow UI on 127.0.0.1 against the configured tracking store (one web worker, no job runner).",
        "examples:\n  layerfuse ui\n  layerfuse ui --port 5001 --workers 2\n"
        "Optuna's own view of a study: optuna-dashboard sqlite:///mlruns/optuna.db",
    )
    p.add_argument("--port", type=positive_int, default=5000, help="port on 127.0.0.1")
    p.add_argument("--workers", type=positive_int, default=1, help="web worker processes (MLflow's default: 4)")
    p.set_defaults(func=_run_ui, flag_keys={})


# MLflow 3's UI opens in its GenAI view unless the URL asks for the model-training one (runs, charts, registry).
UI_VIEW = "#/experiments?workflowType=machine_learning"


def ui_url(port: int) -> str:
    """The address ``layerfuse ui`` prints: the experiments page in MLflow's model-training view."""
    return f"http://127.0.0.1:{port}/{UI_VIEW}"


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
    from benchmark.core.stores import check_port_free, check_tracking
    from benchmark.core.tracking import client

    check_tracking(cfg.tracking)
    check_port_free("127.0.0.1", args.port)
    client(cfg.tracking)  # creates the store's folder so the UI starts on a fresh checkout
    print(f"MLflow UI on {ui_url(args.port)} (store {cfg.tracking.uri}); Ctrl-C to stop", flush=True)
    return serve(ui_command(cfg, args.port, args.workers), {**os.environ, **UI_ENV})


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run a server command until it exits; Ctrl-C or SIGTERM here stops it cleanly and returns 0.

    The server runs in a session of its own, so a terminal's Ctrl-C reaches this process only, which passes one
    SIGINT to the server alone; MLflow then stops its uvicorn worker once. Ctrl-C delivered to both (the whole
    process group) made uvicorn print a shutdown traceback.
    """
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave the server running
        for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig) if sig == signal.SIGKILL else os.kill(proc.pid, sig)
                proc.wait(timeout=grace)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        print("UI stopped", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
        from lightning_modules.fusion_index import FUSION_LINES, RESIDUAL_LINE, RESIDUAL_PREFIX

        return sorted(FUSION_LINES.items()) + [(f"{RESIDUAL_PREFIX}<name>", RESIDUAL_LINE)]
    if what == "presets":
        from studies.trials.presets import PRESETS

        return [(n, p.description) for n, p in PRESETS.items()]
    raise AssertionError(what)


LISTABLE = ("models", "poolings", "datasets", "fusions", "presets")


def _add_ls(sub: Any) -> None:
    p = subparser(sub, "ls", "List registered entries.", "examples:\n  layerfuse ls models\n  layerfuse ls poolings")
    p.add_argument("what", choices=LISTABLE)
    p.set_defaults(func=_run_ls, flag_keys={})


def _run_ls(args: argparse.Namespace, cfg: BenchConfig) -> int:
    for name, text in _listing(args.what):
        print(f"{name:16} {text}")
    return 0


ADDERS = (_add_ui, _add_ls)
