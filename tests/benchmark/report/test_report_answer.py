"""The report opens with its answer: what to ship, its test accuracy and interval, ties, cost, the export command."""

from __future__ import annotations

import json
import math
import shlex

import pytest
from report_fixtures import STUDIES, build_store

from benchmark.cli import main
from benchmark.core import tracking
from benchmark.core.errors import UserError
from benchmark.report import write_report
from benchmark.report.answer.read import read_answer
from benchmark.report.answer.table import wilson


def _wilson_by_hand(p: float, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


def test_wilson_matches_scipy_on_whole_counts() -> None:
    from scipy.stats import binomtest

    for k, n in ((17, 20), (0, 20), (20, 20), (2916, 3554)):
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert all(math.isnan(x) for x in wilson(0.8, 0))


# toy's chosen pair, the studies it ties with, and a second dataset: the fixture's numbers, in fewer runs.
ANSWERED = ["fusion-toy", "multi-toy", "sweep-toy2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("answer-store")
    cfg, parents = build_store(root, [s for s in STUDIES if s[0] in ANSWERED])
    return cfg, parents, root


@pytest.fixture(scope="module")
def report(store):
    cfg, _, root = store
    return write_report(cfg, studies=ANSWERED, out_dir=root / "full")


def test_the_answer_per_dataset(report) -> None:
    answers = {a["dataset"]: a for a in report.summary["answer"]}
    assert set(answers) == {"toy", "toy2"}
    toy = answers["toy"]
    # toy: fusion-methods' concat of dec@3 and enc@1 (val .88, f1 .87); no refit in the store: its fold heads' .86
    # on the 20 test labels of its parent run; tied (report_fixtures): hadamard of the pair and the 3-model concat.
    assert (toy["config"], toy["study"], toy["trial"], toy["test_acc_source"]) == (
        "dec@3 + enc@1 (concat)",
        "fusion-toy",
        0,
        "fold heads",
    )
    assert toy["test_acc"] == pytest.approx(0.86) and toy["test_rows"] == 20
    assert (toy["ci_low"], toy["ci_high"]) == pytest.approx(_wilson_by_hand(0.86, 20), abs=1e-9)
    assert [(t["study"], t["trial"]) for t in toy["tied"]] == [("fusion-toy", 2), ("multi-toy", 0)]
    assert toy["cost"] == {  # PAIR's perf metrics
        "extract_ms_per_sample": 3.0,
        "head_ms_per_sample": 0.2,
        "feature_mib": 1.5,
        "fused_dim": 32.0,
        "measured_in_sweep": False,
    }
    # Two datasets: the command names which answer, and registers the model under the dataset's name.
    out = str(report.out_dir)
    assert shlex.split(toy["export_command"]) == [
        *("layerfuse", "export", "--report", out, "--dataset", "toy", "--name", "toy-clf")
    ]
    toy2 = answers["toy2"]
    assert (toy2["config"], toy2["tied"], toy2["cost"]["measured_in_sweep"]) == ("dec@2", [], True)
    assert toy2["cost"]["head_ms_per_sample"] is None  # a sweep logs no per-layer head time


def test_the_report_opens_with_the_answer(report) -> None:
    md = (report.out_dir / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## The answer", "## How it was chosen"]
    first = md[: md.index("## How it was chosen")]
    assert "**toy: ship dec@3 + enc@1 (concat) (fusion-toy, trial 0).**" in first
    low, high = _wilson_by_hand(0.86, 20)
    assert "Test accuracy 0.8600 (of its validation folds' heads: not refit yet, export refits it first)" in first
    assert f"95% interval [{low:.4f}, {high:.4f}] (Wilson, 20 test rows)" in first
    assert "Tied with (2, within one standard error on validation): dec@3 + enc@1 (hadamard) (fusion-toy #2)" in first
    assert "3.00 ms per text to embed, 0.200 ms for the head" in first
    assert f"layerfuse export --report {report.out_dir} --dataset toy --name toy-clf" in first
    assert "Tied with: none" in first and "an upper bound" in first  # toy2: the sweep's pick
    html = (report.out_dir / "report.html").read_text()
    assert html.index("The answer") < html.index("How it was chosen") < html.index("Best configuration found")


def test_a_refit_gives_the_answer_its_accuracy(tmp_path) -> None:
    cfg, parents = build_store(tmp_path, [s for s in STUDIES if s[0] == "sweep-toy2"])
    mlc = tracking.client(cfg.tracking)
    trial = mlc.search_runs(
        [mlc.get_run(parents["sweep-toy2"]).info.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'trial'"
    )[0]
    refit = mlc.create_run(
        trial.info.experiment_id,
        tags={
            tracking.TAG_PARENT: parents["sweep-toy2"],
            tracking.TAG_KIND: tracking.KIND_REFIT,
            tracking.TAG_REFIT_OF: trial.info.run_id,
        },
    ).info.run_id
    tracking.log_run_data(mlc, refit, metrics={tracking.TEST_ACC: 0.75})
    mlc.set_terminated(refit, "FINISHED")
    result = write_report(cfg, studies=["sweep-toy2"], out_dir=tmp_path / "r")
    (answer,) = result.summary["answer"]
    assert (answer["test_acc"], answer["test_acc_source"], answer["refit_run_id"]) == (0.75, "refit", refit)
    assert (answer["ci_low"], answer["ci_high"]) == pytest.approx(_wilson_by_hand(0.75, 20), abs=1e-9)
    # One dataset: the command needs no --dataset.
    assert answer["export_command"] == f"layerfuse export --report {tmp_path / 'r'} --name toy2-clf"
    assert "Test accuracy 0.7500 (refit on all training rows)" in (tmp_path / "r" / "report.md").read_text()
    # Without a TF-IDF study the regret table says none ran, not "does not beat".
    md = (tmp_path / "r" / "report.md").read_text()
    assert "— (no TF-IDF baseline ran)" in md and "does not beat)" not in md.split("no TF-IDF baseline ran")[0][-40:]


def test_read_answer_and_its_refusals(report, store, tmp_path) -> None:
    cfg, _, _ = store
    uri = cfg.tracking.uri
    assert read_answer(report.out_dir, "toy", uri)["study"] == "fusion-toy"
    with pytest.raises(UserError, match=r"answers for 2 datasets: add --dataset toy\|toy2"):
        read_answer(report.out_dir, None, uri)
    with pytest.raises(UserError, match=r"--dataset 'toy3': the report at .* answers for toy, toy2"):
        read_answer(report.out_dir, "toy3", uri)
    with pytest.raises(UserError, match=r"no summary.json there"):
        read_answer(tmp_path, None, uri)
    with pytest.raises(UserError, match=r"add --set tracking.uri="):
        read_answer(report.out_dir, "toy", "sqlite:///elsewhere.db")
    old = tmp_path / "old"
    old.mkdir()
    summary = json.loads((report.out_dir / "summary.json").read_text())
    del summary["answer"]
    (old / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match=r"names no configuration to ship"):
        read_answer(old, None, uri)


def test_export_report_exports_the_answers_trial(report, store, monkeypatch, capsys) -> None:
    import benchmark.serve.model_export as model_export

    cfg, _, _ = store
    calls = []

    def spy(cfg, study, trial, run_id, *rest):
        calls.append((study, trial, run_id))
        raise UserError("stop here: the choice is what this test checks")

    monkeypatch.setattr(model_export, "export_model", spy)
    argv = ["export", "--report", str(report.out_dir), "--dataset", "toy2", "--set", f"tracking.uri={cfg.tracking.uri}"]
    assert main(argv) == 2
    toy2 = next(a for a in report.summary["answer"] if a["dataset"] == "toy2")
    assert calls == [("sweep-toy2", None, toy2["run_id"])]  # the run id: exactly the report's trial
    assert "exporting the answer of" in capsys.readouterr().out
    for extra, message in (
        (["--study", "x"], "--report names the configuration itself"),
        (["--trial", "3"], "--report names the configuration itself"),
    ):
        assert main([*argv, *extra]) == 2 and message in capsys.readouterr().err
    assert main(["export"]) == 2 and "--report DIR (a report's answer) or --study NAME" in capsys.readouterr().err
    assert main(["export", "--study", "s", "--dataset", "mr"]) == 2
    assert "--dataset picks one answer of --report" in capsys.readouterr().err


def test_the_answer_reads_the_same_from_summary_json(report) -> None:
    from benchmark.report.answer.section import answer_lines

    # The quickstart prints the answers read back from summary.json (NaN -> null): the same sentences as the report.
    md = (report.out_dir / "report.md").read_text()
    for a in json.loads((report.out_dir / "summary.json").read_text())["answer"]:
        head, *rest = answer_lines(a)
        assert f"**{head}**" in md and " ".join(rest) in md
        assert "—" not in " ".join(rest)
