"""``layerfuse study``: bad input, the missing-cache command as printed, the printed best trial and UI hint."""

from __future__ import annotations

from pathlib import Path

from study_helpers import cli_base, run_cli


def test_study_bad_input(study_env, tmp_path, capsys) -> None:
    base = cli_base(study_env, tmp_path)
    code, _, err = run_cli(capsys, "study", "--preset", "serch", "--models", study_env["a"], *base)
    assert code == 2 and "Did you mean 'search'?" in err
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", "minilm-l66", *base)
    assert code == 2 and "Did you mean 'minilm-l6'?" in err
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", "", *base)
    assert code == 2 and "extract.models is empty" in err
    code, _, err = run_cli(
        capsys, "study", "--preset", "multi-model", "--models", f"{study_env['a']},{study_env['b']}", *base
    )
    assert code == 2 and "needs at least 3 models" in err
    code, _, err = run_cli(
        capsys, "study", "--preset", "search", "--models", study_env["a"], *base, "--set", "extract.limit=20"
    )
    assert (
        code == 2
        and f"run first: layerfuse extract --model {study_env['a']} --dataset {study_env['data']} "
        "--split train,test --limit 20"
        in err
    )
    base[base.index("--dataset") + 1] = "no-such-data"
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", study_env["a"], *base)
    assert code == 2 and "no-such-data" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        capsys,
        "study",
        "--preset",
        "search",
        "--models",
        study_env["a"],
        *cli_base(study_env, tmp_path),
        "--set",
        "study.pruner=mediam",
    )
    assert code == 2 and "study.pruner='mediam'" in err and "threshold:X" in err
    for line in err.splitlines():
        assert "Traceback" not in line


def test_missing_cache_message_runs_as_printed(study_env, tmp_path, capsys, monkeypatch) -> None:
    """The printed extract command, run as printed, creates exactly the missing cache (paths and columns kept)."""
    import csv
    import shlex

    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's default cache
    data = tmp_path / "datasets" / "r8"  # the built-in name, read from a non-default paths.data_dir
    data.mkdir(parents=True)
    for split in ("train", "test"):  # the fixture texts under a non-default text column
        rows = list(csv.reader((Path(study_env["data"]) / f"{split}.csv").open()))
        rows[0] = ["body", "label"]
        with (data / f"{split}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    argv = [
        "study",
        "--preset",
        "layer-sweep",
        "--models",
        study_env["a"],
        "--dataset",
        "r8",
        "--no-progress",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--set",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "--set",
        f"tracking.artifact_root={tmp_path}/artifacts",
        "--set",
        f"paths.data_dir={tmp_path / 'datasets'}",
        "--set",
        f"paths.cache_dir={tmp_path / 'new cache'}",
        "--set",
        "data.text_column=body",
        "--set",
        "extract.dtype=fp32",
        "--set",
        "extract.device=cpu",
        "--set",
        "train.max_epochs=1",
    ]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "run first: " in err
    printed = shlex.split(err.split("run first: ", 1)[1])
    assert printed[:2] == ["layerfuse", "extract"]
    code, out, err = run_cli(capsys, *printed[1:], "--no-progress")
    assert code == 0, err
    assert "0 cached, 2 new" in out and (tmp_path / "new cache").is_dir()
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "1 complete" in out


def test_study_cli_prints_best_and_ui_hint(study_env, tmp_path, capsys) -> None:
    code, out, err = run_cli(
        capsys,
        "study",
        "--preset",
        "layer-sweep",
        "--models",
        study_env["a"],
        *cli_base(study_env, tmp_path),
        "--set",
        "train.max_epochs=2",
    )
    assert code == 0, err
    assert "1 complete, 0 pruned, 0 failed" in out and "best trial #0: val acc" in out and "layerfuse ui" in out
