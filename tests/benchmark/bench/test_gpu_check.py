"""The GPU check's ``--device cpu --dry-run``: every check runs small on CPU and the JSON holds its figures."""

from __future__ import annotations

import json

import pytest

from benchmark.bench.gpu_check import main


def test_dry_run_on_cpu_passes_every_check(tiny_models, tiny_data, tmp_path, capsys) -> None:
    out = tmp_path / "gpu_check.json"
    models = f"{tiny_models['llama-left']},{tiny_models['bert-a']}"
    args = ["--device", "cpu", "--dry-run", "--models", models, "--dataset", str(tiny_data), "--out", str(out)]
    code = main([*args, "--work-dir", str(tmp_path / "work")])
    report = json.loads(out.read_text())
    assert code == 0, {k: v for k, v in report["checks"].items() if not v["ok"]}
    assert "every check passed" in capsys.readouterr().out
    checks = report["checks"]
    assert list(checks) == ["extract", "agreement", "oom_backoff", "sweep", "search"]
    assert len(checks["extract"]["caches"]) == 4  # 2 models x train, test
    assert all(c["dtype"] == "bf16" and c["tokens_per_s"] > 0 for c in checks["extract"]["caches"].values())
    for model in checks["agreement"]["models"].values():
        assert len(model["layers"]) in (3, 4) and model["worst_layer_cosine_mean"] >= 0.999
    oom = checks["oom_backoff"]
    assert oom["limit"]["mode"] == "emulated on CPU" and oom["token_budget"]["after"] < oom["token_budget"]["start"]
    assert checks["sweep"]["layers"] == 4 and checks["sweep"]["speedup"] > 0  # tiny llama: 3 layers + embeddings
    assert checks["search"]["trials"]["complete"] + checks["search"]["trials"]["pruned"] == 2
    # every fit's parameters and features were on the accelerator's device (here train.accelerator=cpu)
    assert checks["sweep"]["trained_on"]["devices"] == ["cpu"] and checks["sweep"]["trained_on"]["fits"] == 5
    assert checks["search"]["trained_on"]["on_device"] and checks["search"]["trained_on"]["fits"] >= 1
    assert report["versions"]["device"] == "cpu" and report["versions"]["torch"]


@pytest.mark.gpu
def test_gpu_check_on_cuda_passes_every_check(tiny_models, tiny_data, tmp_path) -> None:
    """The same checks on CUDA with tiny models (seconds); the full check is ``python -m benchmark.bench.gpu_check``."""
    out = tmp_path / "gpu_check.json"
    models = f"{tiny_models['llama-left']},{tiny_models['bert-a']}"
    args = ["--device", "cuda", "--dry-run", "--models", models, "--dataset", str(tiny_data), "--out", str(out)]
    assert main([*args, "--work-dir", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    assert report["versions"]["device"] == "cuda" and all(c["ok"] for c in report["checks"].values())
    assert report["checks"]["sweep"]["trained_on"]["devices"] == ["cuda:0"]  # parameters and features on CUDA
