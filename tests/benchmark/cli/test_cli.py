"""``layerfuse`` CLI: user mistakes give exit 2 and one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def base(tiny_models: dict[str, Path], data: Path | str, cache: Path, model: str = "bert-a") -> list[str]:
    return [
        "extract",
        "--model",
        str(tiny_models.get(model, model)),
        "--dataset",
        str(data),
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        f"paths.cache_dir={cache}",
    ]


def test_extract_then_cache_hit_summary(tiny_models, tiny_data, cache_dir, capsys) -> None:
    code, out, _ = run(capsys, *base(tiny_models, tiny_data, cache_dir), "--split", "train,test", "--dtype", "fp32")
    assert code == 0 and "2 model x split: 0 cached, 2 new" in out and "tokens/s" in out
    code, out, _ = run(capsys, *base(tiny_models, tiny_data, cache_dir), "--split", "train,test", "--dtype", "fp32")
    assert code == 0 and "2 cached, 0 new" in out


def test_ls_lists_registries(capsys) -> None:
    code, out, _ = run(capsys, "ls", "models")
    assert code == 0 and "smollm2-135m" in out and "minilm-l6" in out and "minilm-l3" in out and "e5-large-v2" in out
    code, out, _ = run(capsys, "ls", "poolings")
    assert code == 0 and all(p in out for p in ("mean", "last_token", "cls", "max"))
    code, out, _ = run(capsys, "ls", "datasets")
    assert code == 0 and all(d in out for d in ("sst2", "mr", "r8", "r52"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BAD_INPUTS = {
    "unknown alias": (["--model", "minilm-l66"], "Did you mean 'minilm-l6'?"),
    "unknown dataset": (["--dataset", "sst"], "Did you mean 'sst2'?"),
    "missing split": (["--split", "validation"], "has no split 'validation'"),
    "bad pooling": (["--pooling", "meen"], "Did you mean 'mean'?"),
    "bad dtype": (["--dtype", "fp8"], "extract.dtype='fp8' is not valid"),
    "bad max length": (["--set", "extract.max_length=-3"], "extract.max_length=-3 must be > 0"),
    "unknown key": (["--set", "extract.pooling_mode=mean"], "unknown config key 'extract.pooling_mode'"),
    "never with no cache": (["--overwrite", "never"], "extract.overwrite=never"),
    "max length beyond the positions": (["--max-length", "100"], "max length 100 exceeds the 64 positions"),
    "unknown hub model": (["--model", "layerfuse-test/no-such-model"], "hub ids need network access"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exit_2_one_line(tiny_models, tiny_data, cache_dir, capsys, case) -> None:
    extra, message = BAD_INPUTS[case]
    argv = base(tiny_models, tiny_data, cache_dir)
    for flag in ("--model", "--dataset"):
        if flag in extra:
            i = argv.index(flag)
            del argv[i : i + 2]
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("flag", [["--max-length", "0"], ["--batch-size", "zero"], ["--limit", "-1"]])
def test_bad_numbers_rejected_by_parser(tiny_models, tiny_data, cache_dir, capsys, flag) -> None:
    with pytest.raises(SystemExit) as exc:
        main(base(tiny_models, tiny_data, cache_dir) + flag)
    assert exc.value.code == 2
    assert flag[1] in capsys.readouterr().err


def test_data_file_problems(tiny_models, tmp_path, cache_dir, capsys) -> None:
    empty = _write(tmp_path / "empty" / "train.csv", "text,label\n").parent
    code, _, err = run(capsys, *base(tiny_models, empty, cache_dir), "--split", "train")
    assert code == 2 and "is empty" in err
    nocol = _write(tmp_path / "nocol" / "train.csv", "sentence,label\nhi,1\n").parent
    code, _, err = run(capsys, *base(tiny_models, nocol, cache_dir), "--split", "train")
    assert code == 2 and "no column 'text'" in err and "data.text_column" in err
    code, _, err = run(capsys, *base(tiny_models, "mr", cache_dir), "--set", f"paths.data_dir={tmp_path / 'nowhere'}")
    assert code == 2 and "LAYERFUSE_DATA_DIR" in err


def test_custom_columns_and_split_pattern(tiny_models, tmp_path, cache_dir, capsys) -> None:
    for split in ("train", "test"):
        _write(tmp_path / f"reviews_{split}.csv", "body,stars\nnice film,5\nawful plot,1\nfine,3\n")
    code, out, err = run(
        capsys,
        *base(tiny_models, tmp_path / "reviews_{split}.csv", cache_dir),
        "--split",
        "train,test",
        "--set",
        "data.text_column=body",
        "--set",
        "data.label_column=stars",
    )
    assert code == 0, err
    assert "2 new" in out


def test_gguf_folder_without_its_file(tmp_path, tiny_data, cache_dir, capsys) -> None:
    models = tmp_path / "models"
    _write(models / "SmolLM2-135M-Instruct-Q4_1-gguf" / "config.json", "{}")
    code, _, err = run(
        capsys,
        "extract",
        "--model",
        "smollm2-135m",
        "--dataset",
        str(tiny_data),
        "--no-progress",
        "--set",
        f"paths.models_dir={models}",
        "--set",
        f"paths.cache_dir={cache_dir}",
    )
    assert code == 2 and "GGUF file SmolLM2-135M-Instruct.Q4_1.gguf is missing" in err


def test_local_folder_without_config(tmp_path, tiny_data, cache_dir, capsys) -> None:
    (tmp_path / "not-a-model").mkdir()
    code, _, err = run(capsys, *base({}, tiny_data, cache_dir, model=str(tmp_path / "not-a-model")))
    assert code == 2 and "has no config.json" in err


def test_verbose_shows_traceback(tiny_models, tiny_data, cache_dir) -> None:
    from benchmark.core.errors import UserError

    with pytest.raises(UserError):
        main([*base(tiny_models, tiny_data, cache_dir), "--dtype", "fp8", "-v"])


def test_python_m_benchmark_is_the_cli(tmp_path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "benchmark", "ls", "poolings"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "last_token" in out.stdout
    # The console script sits beside the interpreter (CI calls .venv/bin/python without activating
    # the venv, so it need not be on PATH).
    script = Path(sys.executable).parent / "layerfuse"
    assert script.is_file(), f"console script missing at {script}: reinstall with pip install -e ."
    out = subprocess.run([str(script), "ls", "poolings"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "last_token" in out.stdout


def test_embedded_model_missing_from_models_dir(tmp_path, tiny_data, cache_dir, capsys, monkeypatch, caplog) -> None:
    from benchmark.core.models import MODELS, ModelSpec

    spec = ModelSpec(
        "fake-embedded", "layerfuse-test/fake-embedded", "encoder", 2, 32, "mean", 64, local_dir="fake-dir"
    )
    monkeypatch.setitem(MODELS._entries, spec.alias, spec)
    code, _, err = run(
        capsys,
        "extract",
        "--model",
        "fake-embedded",
        "--dataset",
        str(tiny_data),
        "--no-progress",
        "--set",
        f"paths.models_dir={tmp_path / 'models'}",
        "--set",
        f"paths.cache_dir={cache_dir}",
    )
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (
        "model 'fake-embedded'" in err
        and "fake-dir/ was not found under paths.models_dir (LAYERFUSE_MODELS_DIR)" in err
    )
    assert "hub ids need network access" in err
    assert "using hub id layerfuse-test/fake-embedded" in caplog.text


def test_rerun_that_only_assembles_finished_chunks(tiny_models, tiny_data, cache_dir, capsys, monkeypatch) -> None:
    from benchmark.core.cache_writer import CacheWriter

    real = CacheWriter.finalize

    def killed(self: CacheWriter, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # every chunk is written, the process dies before assembling them

    monkeypatch.setattr(CacheWriter, "finalize", killed)
    code, _, err = run(capsys, *base(tiny_models, tiny_data, cache_dir), "--split", "train")
    assert code == 130 and "rerun the same command to resume" in err
    monkeypatch.setattr(CacheWriter, "finalize", real)
    code, out, err = run(capsys, *base(tiny_models, tiny_data, cache_dir), "--split", "train")
    assert code == 0, err
    assert "1 model x split: 0 cached, 1 new" in out and "tokens/s" not in out
