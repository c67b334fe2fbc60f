"""Export of a study's chosen configuration as an MLflow pyfunc model: reload elsewhere, same labels, cut weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from export_fixtures import STUDY, tiny_study
from mlflow.tracking import MlflowClient

from benchmark.core import tracking
from benchmark.core.keys import load_text_split
from benchmark.model_export import export_model
from benchmark.pyfunc_model import BUNDLE_FILE


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_study(tiny_models, root)
    result = export_model(cfg, STUDY, name="toy-clf", out=root / "saved")
    return cfg, result, root


def _reload_and_predict(model_uri: str, texts: list[str], tracking_uri: str, cwd: Path) -> pd.DataFrame:
    """Load the model in a fresh interpreter that cannot import this checkout (only the model's own code)."""
    script = (
        "import json, sys, mlflow\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "import benchmark; assert 'code' in benchmark.__file__, benchmark.__file__\n"
        "print(m.predict(json.loads(sys.argv[2])).to_json(orient='split'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    out = subprocess.run(
        [sys.executable, "-c", script, model_uri, json.dumps(texts)], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return pd.read_json(__import__("io").StringIO(out.stdout.strip().splitlines()[-1]), orient="split")


def test_exported_model_reloads_elsewhere_and_matches_the_refit(exported, tmp_path) -> None:
    cfg, result, root = exported
    mlc = MlflowClient(cfg.tracking.uri)
    test = load_text_split(cfg, "test")
    refit_pred = np.load(mlc.download_artifacts(result.refit_run_id, tracking.PRED_ARTIFACT.format(seed=0)))
    # A fresh interpreter per load costs ~20 s here: the registry alias there, the saved folder by predict's tests.
    out = _reload_and_predict("models:/toy-clf@champion", test.texts, cfg.tracking.uri, tmp_path)
    names = test.label_names
    assert list(out.columns) == ["label", *(f"prob_{n}" for n in names)]
    assert [names.index(x) for x in out["label"]] == refit_pred.tolist()  # fp32 features: 100% equal
    np.testing.assert_allclose(out.filter(like="prob_").sum(axis=1), 1.0, rtol=1e-9)


def test_bundle_holds_only_the_needed_blocks(exported, tiny_models) -> None:
    from transformers import AutoModel

    from extractors.truncate import param_count

    cfg, result, root = exported
    bundle = next((root / "saved" / "artifacts").rglob(BUNDLE_FILE)).parent
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    llama, bert, tfidf = meta["members"]
    assert tfidf["kind"] == "lexical" and (bundle / tfidf["folder"] / "tfidf.pkl").is_file()
    assert llama["layers"] == [1, 2] and llama["agg"] == "mean" and llama["cut_at"] == 2 and llama["cut"] is True
    assert bert["layers"] == [2] and bert["cut"] is False  # its last layer: kept whole
    full = AutoModel.from_pretrained(tiny_models["llama-left"])
    cut = AutoModel.from_pretrained(bundle / llama["folder"])
    per_block = param_count(full.layers[0])
    assert cut.config.num_hidden_layers == 2 and param_count(full) - param_count(cut) == per_block
    requirements = (root / "saved" / "requirements.txt").read_text()
    assert "torch==" in requirements and "scikit-learn==" in requirements
    assert "lightning" not in requirements and "optuna" not in requirements
    assert result.registered == "toy-clf" and result.version == "1"
    mv = MlflowClient(cfg.tracking.uri).get_model_version_by_alias("toy-clf", "champion")
    assert str(mv.version) == "1" and mv.run_id == result.refit_run_id


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from benchmark.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_cli_keeps_input_order_and_columns(exported, tmp_path, capsys) -> None:
    import mlflow

    cfg, _, root = exported
    texts = load_text_split(cfg, "test").texts[:7] + [""]  # an empty string is classified like any text
    table = pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "label": ["?"] * len(texts)})
    table.to_csv(tmp_path / "in.csv", index=False)
    code, out, err = _cli(
        capsys, "predict", "--model", "models:/toy-clf@champion", "--input", str(tmp_path / "in.csv"),
        "--out", str(tmp_path / "out.csv"), "--no-progress", "--set", f"tracking.uri={cfg.tracking.uri}",
    )  # fmt: skip
    assert code == 0, err
    assert "wrote 8 rows" in out
    got = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    want = mlflow.pyfunc.load_model(str(root / "saved")).predict(texts)
    assert list(got.columns) == ["id", "text", "label_input", *want.columns]
    assert got["id"].tolist() == table["id"].tolist() and got["text"].tolist() == texts
    assert got["label"].tolist() == want["label"].tolist()
    np.testing.assert_allclose(got.filter(like="prob_").to_numpy(), want.filter(like="prob_").to_numpy(), rtol=1e-6)
    table[["text"]].to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    code, _, err = _cli(
        capsys, "predict", "--model", str(root / "saved"), "--input", str(tmp_path / "in.jsonl"),
        "--out", str(tmp_path / "out.parquet"), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "out.parquet")["label"].tolist() == want["label"].tolist()


def test_predict_bad_inputs_exit_2_with_one_line(exported, tmp_path, capsys) -> None:
    cfg, _, root = exported
    good = tmp_path / "good.csv"
    pd.DataFrame({"text": ["good film"]}).to_csv(good, index=False)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text\n")
    (tmp_path / "numbers.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    cases = [
        (["--model", "models:/no-such-model@champion", "--input", str(good)], "cannot load model"),
        (["--model", str(tmp_path / "nowhere"), "--input", str(good)], "cannot load model"),
        (["--model", str(root / "saved"), "--input", str(good), "--text-column", "body"], "no column 'body'"),
        (["--model", str(root / "saved"), "--input", str(tmp_path / "empty.csv")], "is empty"),
        (["--model", str(root / "saved"), "--input", str(tmp_path / "header.csv")], "has no rows"),
        (["--model", str(root / "saved"), "--input", str(tmp_path / "numbers.jsonl")], "row 1 of column 'text' is 3"),
    ]
    for argv, message in cases:
        code, _, err = _cli(
            capsys, "predict", *argv, "--out", str(tmp_path / "o.csv"), "--set", f"tracking.uri={cfg.tracking.uri}"
        )
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_mlflow_models_serve_answers_invocations(exported, tmp_path) -> None:
    import signal
    import socket
    import time
    import urllib.request

    cfg, _, root = exported
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = cfg.tracking.uri
    # The server execs uvicorn by name: the venv's bin must be on PATH, as it is for an activated venv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/toy-clf@champion", "--env-manager",
           "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True
    )
    texts = ["good film good", "awful bad bad", ""]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "mlflow models serve exited before answering"
                assert time.monotonic() < deadline, "mlflow models serve did not answer within 120 s"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": texts}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    import mlflow

    want = mlflow.pyfunc.load_model(str(root / "saved")).predict(texts)
    assert [row["label"] for row in answer["predictions"]] == want["label"].tolist()


def test_export_cli_weights_reference_checks_the_hash(exported, tmp_path, capsys) -> None:
    import mlflow

    from benchmark.pyfunc_model import Bundle, WeightsMismatchError

    cfg, _, root = exported
    code, out, err = _cli(
        capsys, "export", "--study", STUDY, "--weights", "reference", "--out", str(tmp_path / "ref"),
        "--storage", cfg.study.storage, "--set", f"tracking.uri={cfg.tracking.uri}",
        "--set", f"paths.cache_dir={cfg.paths.cache_dir}",
    )  # fmt: skip
    assert code == 0, err
    assert "saved to" in out
    bundle = next((tmp_path / "ref" / "artifacts").rglob(BUNDLE_FILE)).parent
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    hf = [m for m in meta["members"] if m["kind"] != "lexical"]
    assert len(hf) == 2 and all("folder" not in m and len(m["weights_sha256"]) == 64 for m in hf)
    assert not list((bundle).rglob("*.safetensors"))[1:]  # only the head's weights travel
    texts = load_text_split(cfg, "test").texts
    want = mlflow.pyfunc.load_model(str(root / "saved")).predict(texts)
    assert Bundle(bundle, "cpu").predict(texts)["label"].tolist() == want["label"].tolist()
    meta["members"][0]["weights_sha256"] = "0" * 64
    (bundle / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(WeightsMismatchError, match="sha256"):
        Bundle(bundle, "cpu")
