"""Export of a study's chosen configuration as an MLflow pyfunc model: reload elsewhere, same labels, cut weights."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from export_fixtures import STUDY, tiny_study
from mlflow.tracking import MlflowClient

from benchmark.core import tracking
from benchmark.core.keys import load_text_split
from benchmark.serve.model_export import export_model
from benchmark.serve.pyfunc_model import BUNDLE_FILE


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    """A project folder (stores in ``mlruns/``, ``.venv`` linked) with the toy study exported as ``mr-clf``.

    Also returns the refit run as the study left it, before the export.
    """
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_study(tiny_models, root)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)  # README lines call .venv/bin/...
    mlc = MlflowClient(cfg.tracking.uri)
    refit = mlc.search_runs(
        [mlc.get_experiment_by_name(tracking.experiment_name(cfg.extract.dataset)).experiment_id],
        f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_REFIT}'",
    )
    assert len(refit) == 1
    result = export_model(cfg, STUDY, name="mr-clf", out=root / "saved")
    return cfg, result, root, refit[0]


README = Path(__file__).resolve().parents[3] / "README.md"


def readme_line(start: str) -> str:
    """The README command line that starts with ``start`` (in a bash block), without its trailing comment."""
    lines = [line for line in README.read_text().splitlines() if line.startswith(start)]
    assert len(lines) == 1, (start, lines)
    return lines[0].split("   #")[0].strip()


def _user_env() -> dict[str, str]:
    """The environment of a user's shell: no store variable, no checkout on the Python path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(line: str, cwd: Path, url: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Run a README server line in ``cwd`` until ``url`` answers (at most 120 s), then stop its process group."""
    proc = subprocess.Popen(
        ["bash", "-c", line], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, f"{line!r} exited before answering: {proc.communicate()[0][-3000:]}"
                assert time.monotonic() < deadline, f"{line!r} did not answer within 120 s"
                time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.fixture(scope="module")
def served(exported):
    """README's ``mlflow models serve`` line, run verbatim from the project folder (on a free loopback port)."""
    _, _, root, _ = exported
    line = readme_line("MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db PATH=.venv/bin:$PATH mlflow models serve")
    assert line.endswith(" -p 5001")
    port = _free_port()
    with _server(
        line.replace(" -p 5001", f" -h 127.0.0.1 -p {port}"), root, f"http://127.0.0.1:{port}/ping", _user_env()
    ):
        yield f"http://127.0.0.1:{port}/invocations"


def _post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_readme_serve_line_answers_with_the_refit_labels(exported, served) -> None:
    import mlflow

    cfg, result, root, _ = exported
    test = load_text_split(cfg, "test")
    code, answer = _post(served, {"inputs": test.texts})
    assert code == 200, answer
    refit_pred = np.load(
        MlflowClient(cfg.tracking.uri).download_artifacts(result.refit_run_id, tracking.PRED_ARTIFACT.format(seed=0))
    )
    labels = [row["label"] for row in answer["predictions"]]
    assert [test.label_names.index(x) for x in labels] == refit_pred.tolist()  # fp32 features: 100% equal
    # One record per text, the columns of the loaded model's frame: label, then prob_<class> in label id order.
    want = mlflow.pyfunc.load_model(str(root / "saved")).predict(test.texts)
    assert all(list(row) == list(want.columns) for row in answer["predictions"]), answer["predictions"][0]
    assert list(want.columns) == ["label", *(f"prob_{name}" for name in test.label_names)]
    assert labels == want["label"].tolist()
    got = pd.DataFrame(answer["predictions"])[want.columns[1:]].to_numpy()
    np.testing.assert_allclose(got, want.iloc[:, 1:].to_numpy(), rtol=1e-6)  # another process: same fp32 maths
    assert not (root / "mlflow.db").exists()  # MLflow's own default store was never opened


TYPE_HINT = "Failed to validate data against type hint `list[str]`, invalid elements: "
NOT_INPUTS = "Request payload must be a dictionary with 'inputs' key when the model contains a valid type hint. "


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"inputs": [1, 2]}, TYPE_HINT + "[('1', 'Expected type str, but got int'), ('2', 'Expected type str, "),
        ({"inputs": [None]}, TYPE_HINT + "[('None', 'Expected type str, but got NoneType')]"),
        ({"inputs": ["good film", 2.5]}, TYPE_HINT + "[('2.5', 'Expected type str, but got float')]"),
        ({"inputs": "good film"}, "Expected list, but got str"),
        ({"inputs": {"text": ["good film"]}}, "Expected list, but got dict"),
        (
            {"dataframe_split": {"columns": ["body", "x"], "data": [["good film", 1]]}},
            NOT_INPUTS + "Found keys in payload: dict_keys(['dataframe_split']).",
        ),
        ({"dataframe_records": [{"text": "good film"}]}, NOT_INPUTS + "Found keys in payload: dict_keys(['dataframe_r"),
    ],
)
def test_served_model_refuses_what_is_not_a_list_of_texts(served, body, problem) -> None:
    """MLflow checks each request against the model's ``list[str]`` type hint: a 400 whose last line is the problem."""
    code, answer = _post(served, body)
    assert code == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", (code, answer)
    assert answer["message"].splitlines()[-1].removeprefix("Error: ").startswith(problem), answer["message"]


def test_loaded_model_takes_texts_and_refuses_other_values(exported) -> None:
    """In Python the model takes a list of texts; MLflow reads a DataFrame as its first string column (README)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    cfg, _, root, _ = exported
    texts = load_text_split(cfg, "test").texts[:5]
    model = mlflow.pyfunc.load_model(str(root / "saved"))
    want = model.predict(texts)
    assert want.columns[0] == "label" and len(want) == 5
    pd.testing.assert_frame_equal(model.predict(pd.DataFrame({"text": texts})), want)
    # Several columns: MLflow hands the model the first one holding a string, whatever its name.
    other = pd.DataFrame({"n": range(5), "title": texts[::-1], "text": texts})
    pd.testing.assert_frame_equal(model.predict(other), model.predict(texts[::-1]))
    for bad, problem in [
        ([texts[0], 3], "('3', 'Expected type str, but got int')"),
        (pd.DataFrame({"text": [texts[0], None]}), "Expected type str, but got"),
        (pd.DataFrame({"n": [1, 2]}), "Expected model input to contain at least one string column"),
    ]:
        with pytest.raises(MlflowException) as err:
            model.predict(bad)
        assert problem in err.value.message and len(err.value.message.splitlines()) == 1, err.value.message


def test_readme_load_model_line_runs_from_the_project_folder(exported) -> None:
    _, _, root, _ = exported
    line = readme_line("MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db .venv/bin/python -c")
    out = subprocess.run(["bash", "-c", line], cwd=root, env=_user_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    header = out.stdout.strip().splitlines()[-2].split()
    assert header[0] == "label" and all(h.startswith("prob_") for h in header[1:]), out.stdout
    assert not (root / "mlflow.db").exists()


def test_bundle_holds_only_the_needed_blocks(exported, tiny_models) -> None:
    from transformers import AutoModel

    from extractors.truncate import param_count

    cfg, result, root, _ = exported
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
    assert "+" not in requirements  # no local build label (2.13.0+cpu) that resolves to another build elsewhere
    import importlib.metadata as md

    import yaml

    meta = yaml.safe_load((root / "saved" / "MLmodel").read_text())["metadata"]
    torch_version = md.version("torch").split("+")[0]
    assert f"torch=={torch_version}\n" in requirements and meta["torch_build"] == md.version("torch")
    assert meta["torch_cpu"] == f"pip install torch=={torch_version} --index-url https://download.pytorch.org/whl/cpu"
    assert meta["torch_cuda"].startswith(f"pip install torch=={torch_version} ")
    mlmodel = yaml.safe_load((root / "saved" / "MLmodel").read_text())
    assert mlmodel["is_signature_from_type_hint"] is True  # TextClassifier.predict's list[str]
    assert json.loads(mlmodel["signature"]["inputs"]) == [{"type": "string", "required": True}]
    test_texts = load_text_split(cfg, "test").texts[:3]
    assert json.loads((root / "saved" / "input_example.json").read_text()) == test_texts
    assert json.loads((root / "saved" / "serving_input_example.json").read_text()) == {"inputs": test_texts}
    assert (root / "saved" / "python_model.pkl").stat().st_size < 10_000  # the class, never the loaded bundle
    code = root / "saved" / "code"
    assert (code / "benchmark" / "serve" / "pyfunc_model.py").is_file() and not (code / "benchmark" / "bench").exists()
    assert result.registered == "mr-clf" and result.version == "1"
    mv = MlflowClient(cfg.tracking.uri).get_model_version_by_alias("mr-clf", "champion")
    assert str(mv.version) == "1" and mv.run_id == result.refit_run_id


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from benchmark.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_cli_keeps_input_order_and_columns(exported, tmp_path, capsys) -> None:
    import mlflow

    cfg, _, root, _ = exported
    texts = load_text_split(cfg, "test").texts[:7] + [""]  # an empty string is classified like any text
    table = pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "label": ["?"] * len(texts)})
    table.to_csv(tmp_path / "in.csv", index=False)
    code, out, err = _cli(
        capsys, "predict", "--model", "models:/mr-clf@champion", "--input", str(tmp_path / "in.csv"),
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


def test_a_model_exported_before_the_serve_package_still_predicts(exported, tmp_path, capsys, monkeypatch) -> None:
    """Models exported before ``benchmark.serve`` name their class ``benchmark.pyfunc_model.TextClassifier`` in
    ``python_model.pkl`` (MLflow pickles it by reference); ``layerfuse predict``, which has imported this checkout's
    ``benchmark``, still loads them and gives the same predictions."""
    import cloudpickle
    import mlflow

    from benchmark.serve.pyfunc_model import TextClassifier

    cfg, _, root, _ = exported
    old = tmp_path / "old-model"
    shutil.copytree(root / "saved", old)
    with (old / "python_model.pkl").open("rb") as fh:
        model = cloudpickle.load(fh)
    importlib.import_module("benchmark.pyfunc_model")  # cloudpickle pickles by reference only what is imported
    monkeypatch.setattr(TextClassifier, "__module__", "benchmark.pyfunc_model")  # the path an old export pickled
    legacy = cloudpickle.dumps(model)
    monkeypatch.undo()
    assert b"benchmark.pyfunc_model" in legacy and b"benchmark.serve" not in legacy
    monkeypatch.delitem(sys.modules, "benchmark.pyfunc_model")  # loading imports it, as in a fresh process
    (old / "python_model.pkl").write_bytes(legacy)
    texts = load_text_split(cfg, "test").texts[:6]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
    code, out, err = _cli(
        capsys, "predict", "--model", str(old), "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "o.csv"),
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    got = pd.read_csv(tmp_path / "o.csv", keep_default_na=False)
    want = mlflow.pyfunc.load_model(str(root / "saved")).predict(texts)
    assert got["label"].tolist() == want["label"].tolist()
    np.testing.assert_allclose(got.filter(like="prob_").to_numpy(), want.filter(like="prob_").to_numpy(), rtol=1e-6)


def test_predict_bad_inputs_exit_2_with_one_line(exported, tmp_path, capsys) -> None:
    cfg, _, root, _ = exported
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


def test_export_cli_weights_reference_checks_the_hash(exported, tmp_path, capsys, client_opens) -> None:
    import mlflow

    from benchmark.serve.pyfunc_model import Bundle, WeightsMismatchError

    cfg, _, root, _ = exported
    code, out, err = _cli(
        capsys, "export", "--study", STUDY, "--weights", "reference", "--out", str(tmp_path / "ref"),
        "--storage", cfg.study.storage, "--set", f"tracking.uri={cfg.tracking.uri}",
        "--set", f"paths.cache_dir={cfg.paths.cache_dir}", "--name", "mr-ref",
    )  # fmt: skip
    assert code == 0, err
    assert "saved to" in out
    assert client_opens == [cfg.tracking.uri]  # choice, its refit (reused) and the export share one MLflow client
    serve = f"MLFLOW_TRACKING_URI={cfg.tracking.uri} mlflow models serve -m models:/mr-ref@champion --env-manager local"
    assert serve in out  # the store MLflow's own tools need, in the command printed
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


def test_readme_ui_line_prints_the_training_view_and_serves_the_store(tmp_path) -> None:
    """From a fresh clone (no store yet): the UI creates ``mlruns/mlflow.db``, serves it and prints its view."""
    clone = tmp_path / "clone"
    (clone / "mlruns").mkdir(parents=True)
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    line = readme_line(".venv/bin/layerfuse ui")
    port = _free_port()
    env = {**_user_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[3])}  # this checkout's layerfuse
    api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=50"
    with _server(f"{line} --port {port}", clone, api, env) as proc:
        experiments = json.loads(urllib.request.urlopen(api, timeout=10).read())["experiments"]
        printed = next(line for line in proc.stdout if "MLflow UI on" in line).strip()  # printed before the exec
        url = printed.split("MLflow UI on ")[1].split()[0]
        page = urllib.request.urlopen(url, timeout=10).read().decode()  # the fragment stays in the browser
    assert url == f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning", printed
    assert "<title>MLflow</title>" in page
    assert [e["name"] for e in experiments] == ["Default"]  # a fresh store
    assert (clone / "mlruns" / "mlflow.db").is_file() and not (clone / "mlflow.db").exists()


def test_the_installed_mlflow_ui_reads_the_workflow_type_from_the_url() -> None:
    """The view the printed URL asks for exists in the UI this venv serves (a check without a browser)."""
    import mlflow

    scripts = (Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("*.js")
    readers = [p for p in scripts if 'get("workflowType")' in (text := p.read_text(errors="ignore"))
               and '"machine_learning"' in text]  # fmt: skip
    assert readers, "MLflow's UI no longer reads ?workflowType=machine_learning: update benchmark.cli.browse.UI_VIEW"


def test_readme_optuna_dashboard_line_serves_the_studies(exported) -> None:
    _, _, root, _ = exported
    line = readme_line(".venv/bin/optuna-dashboard sqlite:///mlruns/optuna.db")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api/studies"
    with _server(f"{line} --host 127.0.0.1 --port {port}", root, api, _user_env()):
        studies = json.loads(urllib.request.urlopen(api, timeout=10).read())["study_summaries"]
    assert STUDY in {s["study_name"] for s in studies}


def test_export_keeps_the_refit_run_and_refit_runs_carry_inputs_and_source(exported) -> None:
    cfg, result, _, before = exported
    mlc = MlflowClient(cfg.tracking.uri)
    after = mlc.get_run(result.refit_run_id)
    assert after.info.run_id == before.info.run_id
    assert (after.info.status, after.info.end_time) == ("FINISHED", before.info.end_time)  # export changed neither
    assert len({d.dataset.name for d in after.inputs.dataset_inputs}) == 1  # one dataset, in two contexts
    assert sorted(t.value for d in after.inputs.dataset_inputs for t in d.tags) == ["test", "train"]
    tags = after.data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] and tags["mlflow.user"]
    repo = Path(__file__).resolve().parents[3]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode == 0:  # run from a checkout
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    logged = mlc.get_logged_model(result.model_uri.removeprefix("models:/"))
    assert (logged.source_run_id, logged.experiment_id) == (after.info.run_id, after.info.experiment_id)
    mv = mlc.get_model_version_by_alias("mr-clf", "champion")
    assert mv.run_id == result.refit_run_id


def _registry_and_models(cfg) -> tuple[set[tuple[str, str]], int]:
    """Every registered (name, version), and the number of logged models in the study's experiment."""
    import mlflow

    mlc = MlflowClient(cfg.tracking.uri)
    versions = {(v.name, str(v.version)) for v in mlc.search_model_versions()}
    exp = mlc.get_experiment_by_name(tracking.experiment_name(cfg.extract.dataset)).experiment_id
    mlflow.set_tracking_uri(cfg.tracking.uri)
    return versions, len(mlflow.search_logged_models(experiment_ids=[exp], output_format="list"))


def _export_cli(capsys, cfg, *argv: str) -> tuple[int, str, str]:
    return _cli(
        capsys, "export", "--study", STUDY, "--storage", cfg.study.storage, "--set", f"tracking.uri={cfg.tracking.uri}",
        "--set", f"paths.cache_dir={cfg.paths.cache_dir}", *argv,
    )  # fmt: skip


def test_export_refuses_bad_names_aliases_and_folders_before_any_work(exported, tmp_path, capsys) -> None:
    cfg, _, _, _ = exported
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    cases = [
        (["--name", "ok-clf", "--alias", "a b/c!"], "--alias 'a b/c!'"),
        (["--name", "bad/name"], "--name 'bad/name'"),
        (["--name", "ok-clf", "--alias", "latest"], "'latest' alias name (case insensitive) is reserved"),
        (["--name", "ok-clf", "--alias", "v1"], "Version alias name 'v1' is reserved"),
        (["--name", "   "], "--name '   '"),
        (["--name", " mr-clf"], "leading or trailing spaces"),
        (["--alias", "staging"], "add --name NAME"),
        (["--out", str(tmp_path / "a-file")], "is a file"),
        (["--out", str(tmp_path / "a-file" / "model")], "is a file"),
        (["--out", str(tmp_path / "full")], "exists and is not empty"),
    ]
    before = _registry_and_models(cfg)
    for argv, message in cases:
        started = time.monotonic()
        code, out, err = _export_cli(capsys, cfg, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert time.monotonic() - started < 5, argv  # refused before the refit and the bundle
    assert _registry_and_models(cfg) == before  # nothing logged, registered or aliased
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "full"]


def _error_line(err: str) -> str:
    """The one error line of a refused command (progress bars of the refit and bundle may precede it)."""
    lines = [line for line in err.splitlines() if line.startswith("layerfuse: error: ")]
    assert len(lines) == 1 and "Traceback" not in err and err.strip().endswith(lines[0]), err
    return lines[0]


def test_export_out_on_a_full_disk_leaves_no_folder_and_registers_nothing(
    exported, tmp_path, capsys, monkeypatch
) -> None:
    import errno
    from collections import namedtuple

    import mlflow

    import benchmark.serve.model_export as model_export

    cfg, _, _, _ = exported
    before = _registry_and_models(cfg)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(model_export.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**18, 2**18))
    code, _, err = _export_cli(capsys, cfg, "--name", "full-clf", "--out", str(tmp_path / "model"))
    line = _error_line(err)
    assert code == 2 and f"--out {tmp_path / 'model'}: 0.2 MB free on its disk, the model needs " in line, err
    assert float(line.split("the model needs ")[1].split()[0]) > 0.2
    monkeypatch.undo()  # the disk has room again

    def fills_the_disk(path: str, **kwargs) -> None:  # a writer that runs out of space half-way
        Path(path).mkdir(parents=True)
        (Path(path) / "MLmodel").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mlflow.pyfunc, "save_model", fills_the_disk)
    code, _, err = _export_cli(capsys, cfg, "--name", "full-clf", "--out", str(tmp_path / "model"))
    assert code == 2 and "the disk filled while saving" in _error_line(err), err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling
    assert _registry_and_models(cfg) == before  # champion still points at the complete model
