"""``--help``, ``--version``, ``ls`` and refusals of misspelt names import neither torch, Lightning nor MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmark.cli import main

HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "transformers", "sklearn", "pandas")

# (argv, expected exit code): each is answered from the parser and the registries alone.
FAST = [
    (["--help"], 0),
    (["--version"], 0),
    (["study", "--help"], 0),
    (["ls", "presets"], 0),
    (["ls", "models"], 0),
    (["ls", "datasets"], 0),
    (["ls", "poolings"], 0),
    (["ls", "fusions"], 0),
    (["fit", "--dataset", "mr", "--layer", "minilm-l6=3", "--fusion", "sumx"], 2),
    (["study", "--preset", "fusion-methods", "--models", "minilm-l6,minilm-l3", "--set", "study.fusions=sum,cat"], 2),
    (["study", "--preset", "layer-swep", "--dataset", "mr"], 2),
    (["quickstart", "--set", "pipeline.presets=layer-sweep,serach"], 2),
    (["reproduce", "--set", "study.preset=fusion"], 2),
    (["extract", "--pooling", "meen"], 2),
    (["extract", "--model", "minilm-l66", "--dataset", "mr"], 2),
    (["study", "--models", "minilm-l6", "--dataset", "mrr"], 2),
    (["reproduce", "--datasets", "mr,sst"], 2),
    (["ls", "nothing"], 2),
]

PROBE = """
import contextlib, io, json, sys
from benchmark.cli import main
heavy, cases, seen = json.loads(sys.argv[1]), json.loads(sys.argv[2]), []
for argv, _ in cases:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    # sys.modules only grows: the first case after which a heavy module is loaded is the one that loaded it
    seen.append([code, sorted(m for m in heavy if m in sys.modules)])
print(json.dumps(seen))
"""


def test_fast_answers_import_no_heavy_module() -> None:
    # A fresh interpreter: the test session itself has imported everything long ago.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(FAST)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    seen = json.loads(out.stdout)
    for (argv, code), (got, loaded) in zip(FAST, seen, strict=True):
        assert got == code, (argv, got)
        assert loaded == [], f"layerfuse {' '.join(argv)} imported {loaded}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["fit", "--dataset", "mr", "--layer", "minilm-l6=3", "--fusion", "sumx"],
            "train.fusion (--fusion): unknown fusion 'sumx'.",
        ),
        (["ls", "fusions"], "residual:<name>"),
    ],
)
def test_fusions_are_listed_and_refused_from_the_index(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_modules.components.fusion import FUSIONS

    code = main(argv)
    out, err = capsys.readouterr()
    assert message in out + err
    if code == 0:  # the listing names every registered fusion with its class's own first docstring line
        for name, cls in FUSIONS.items():
            assert f"{name}" in out and (cls.__doc__ or "").strip().splitlines()[0] in out
    else:
        assert code == 2 and "Did you mean 'sum'?" in err and len(err.strip().splitlines()) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata as md

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"layerfuse {md.version('layerfuse')}"


def test_study_help_and_ls_list_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from studies.trials.presets import PRESETS

    with pytest.raises(SystemExit):
        main(["study", "--help"])
    help_text = capsys.readouterr().out
    assert main(["ls", "presets"]) == 0
    listed = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert f"  {name:15} {preset.description}" in help_text
        assert listed.count(f"{name:16} {preset.description}") == 1
    assert "tfidf-baseline" in help_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["study", "--preset", "layer-swep"], "unknown preset 'layer-swep'. Did you mean 'layer-sweep'?"),
        (["quickstart", "--set", "pipeline.presets=layer-sweep,serach"], "unknown preset 'serach'"),
        (["study", "--models", "minilm-l6,minilm-l66"], "unknown model 'minilm-l66'. Did you mean 'minilm-l6'?"),
        (["extract", "--dataset", "mrr"], "unknown dataset 'mrr'. Did you mean 'mr'?"),
        (["reproduce", "--datasets", "mr,sst"], "unknown dataset 'sst'. Did you mean 'sst2'?"),
    ],
)
def test_misspelt_names_are_one_line_naming_the_valid_ones(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
