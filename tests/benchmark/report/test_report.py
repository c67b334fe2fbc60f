"""``write_report`` on a store of known values: every number equals hand computation, files, artifacts, bad input."""

from __future__ import annotations

import csv
import json
import math
import shlex

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from report_fixtures import BEST_CONFIG, REPORTED, STUDIES, build_store

from benchmark.cli import build_parser, main
from benchmark.core import tracking
from benchmark.core.config import load_config
from benchmark.core.errors import UserError
from benchmark.report import write_report
from benchmark.report.layers.table import BEST_LAST_COLUMNS

# emb scored one layer only: no accuracy-by-layer figure of its own (a lone point says nothing about layers)
EXPECTED_PNGS = {
    "acc_by_layer_dec.png",
    "acc_by_layer_enc.png",
    "last_k_dec.png",
    "fusion_comparison.png",
    "cost_vs_models.png",
    "acc_vs_cost.png",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The fixture studies in a fresh MLflow store: ``(cfg, {study: parent run id}, root)``."""
    root = tmp_path_factory.mktemp("report-store")
    cfg, parents = build_store(root)
    return cfg, parents, root


@pytest.fixture(scope="module")
def report(store):
    """One report over every study with finished trials."""
    cfg, _, root = store
    return write_report(cfg, studies=REPORTED, out_dir=root / "full")


def rows_of(summary: dict, key: str, **match: object) -> list[dict]:
    return [r for r in summary[key] if all(r[k] == v for k, v in match.items())]


def test_best_layers_csv_matches_hand_computation(report) -> None:
    with (report.out_dir / "best_layers.csv").open() as fh:
        rows = {(r["dataset"], r["model"]): r for r in csv.DictReader(fh)}
    assert set(rows) == {("toy", "dec"), ("toy", "enc"), ("toy", "emb"), ("toy2", "dec")}
    expected = {  # (best layer, last layer, best val, best test, gain val, gain test, source)
        ("toy", "dec"): (3, 4, 0.85, 0.83, 0.03, 0.03, "layer-sweep"),
        ("toy", "enc"): (1, 2, 0.79, 0.80, 0.01, 0.03, "layer-sweep"),
        ("toy2", "dec"): (2, 4, 0.70, 0.72, 0.04, 0.12, "layer-sweep"),
    }
    for key, (best, last, val, test, gain_val, gain_test, source) in expected.items():
        r = rows[key]
        assert (int(r["best_layer"]), int(r["last_layer"]), r["source"]) == (best, last, source)
        assert float(r["best_val_acc"]) == pytest.approx(val) and float(r["best_test_acc"]) == pytest.approx(test)
        assert float(r["gain_val"]) == pytest.approx(gain_val) and float(r["gain_test"]) == pytest.approx(gain_test)
    dec = rows["toy", "dec"]  # seeds [.82, .84, .83]: mean .83, std .01, CI [.82, .84]
    assert int(dec["best_test_n"]) == 3 and float(dec["best_test_mean"]) == pytest.approx(0.83)
    assert float(dec["best_test_std"]) == pytest.approx(0.01)
    assert (float(dec["best_test_ci_low"]), float(dec["best_test_ci_high"])) == pytest.approx((0.82, 0.84))
    emb = rows["toy", "emb"]  # no sweep and not in the registry: its own trial, depth unknown, so no gain
    assert (emb["source"], emb["best_layer"], emb["last_layer"], emb["gain_test"]) == ("trial", "1", "", "")


def test_summary_layers_and_last_k(report) -> None:
    s = report.summary
    assert s["num_layers"] == {"dec": 4, "enc": 2, "emb": None}
    chosen = [r for r in s["last_k"] if (r["agg"], r["k"]) == ("mean", 2)]
    assert len(s["last_k"]) == 5 and chosen[0]["val/acc"] == 0.84 and chosen[0]["test/acc"] == 0.82
    assert max(s["last_k"], key=lambda r: r["val/acc"]) == chosen[0]  # search's "mean:2,3,4" is not a last-k row


def test_summary_best_configs_fusion_and_multi(report) -> None:
    s = report.summary
    toy, toy2 = rows_of(s, "best", dataset="toy")[0], rows_of(s, "best", dataset="toy2")[0]
    # concat and hadamard tie on val .88; concat's val/f1 .87 wins. Seeds [.85, .86, .87]: CI [.85, .87].
    assert [toy[k] for k in ("study", "trial", "fusion", "val_acc", "test_acc")] == [
        "fusion-toy",
        0,
        "concat",
        0.88,
        0.86,
    ]
    seeds = ("test_n", "test_mean", "test_std", "test_ci_low", "test_ci_high")
    assert [toy[k] for k in seeds] == [3, 0.86, 0.01, 0.85, 0.87]
    assert (toy2["config"], toy2["study"], toy2["val_acc"], toy2["test_acc"]) == ("dec@2", "sweep-toy2", 0.70, 0.72)
    fusion = {r["fusion"]: r for r in s["fusion_comparison"]}
    assert set(fusion) == {"concat", "hadamard", "sum", "residual:quaternion"}
    assert (fusion["concat"]["trial"], fusion["concat"]["test_acc"]) == (0, 0.86)  # not the concat at val .87
    assert fusion["sum"]["best_member"] == "dec@3" and fusion["sum"]["gain_test_vs_member"] == pytest.approx(0.03)
    (multi,) = s["multi_model"]
    assert (multi["models"], multi["fusion"], multi["val_acc"], multi["test_acc"]) == (
        "dec,enc,emb",
        "concat",
        0.87,
        0.85,
    )


def test_summary_cost_and_pareto(report) -> None:
    s = report.summary
    cost = {r["n_models"]: r for r in s["cost"]}  # a sweep's cost is every layer's: left out, so toy2 has no row
    assert {r["dataset"] for r in s["cost"]} == {"toy"} and set(cost) == {1, 2, 3}
    assert (cost[1]["config"], cost[1]["fused_dim"], cost[1]["feature_mib"]) == ("dec@3", 16, 1.0)
    costs = ("fused_dim", "feature_mib", "extract_ms_per_sample", "head_ms_per_sample")
    assert [cost[3][k] for k in costs] == [48, 2.0, 3.5, 0.3]
    front = [(r["config"], r["feature_mib"], r["val_acc"]) for r in s["pareto"]]
    assert front == [("emb@1 (residual:sum)", 0.25, 0.70), ("dec@3", 1.0, 0.86), ("dec@3 + enc@1 (concat)", 1.5, 0.88)]


def test_paired_test_matches_hand_computation(report) -> None:
    (p,) = report.summary["paired_tests"]
    assert (p["fusion"], p["single"], p["folds"]) == ("dec@3 + enc@1 (concat)", "dec@3", 1)
    assert p["units"] == [{"fold": 0, "seed": k} for k in range(3)]  # the single split: units are seeds
    t = p["paired_t"]  # differences [.02, .01, .03]: mean .02, sd .01, t = .02 / (.01 / sqrt 3)
    assert t["mean_diff"] == pytest.approx(0.02) and t["t"] == pytest.approx(0.02 / (0.01 / math.sqrt(3)))
    # Student t with 2 dof: CDF(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert t["p_value"] == pytest.approx(1 - t["t"] / math.sqrt(2 + t["t"] ** 2), rel=1e-6)
    assert [(m["only_a"], m["only_b"], m["p_value"]) for m in p["mcnemar"]] == [
        (5, 0, 0.0625),
        (1, 2, 1.0),
        (0, 0, 1.0),
    ]
    assert p["notes"] == []


def test_unfinished_trials_are_never_selected(report) -> None:
    s = report.summary
    assert s["trial_counts"]["sweep-toy"] == {"COMPLETE": 2, "PRUNED": 1}
    assert s["trial_counts"]["search-toy"] == {"COMPLETE": 5, "FAIL": 1, "PRUNED": 1}
    assert s["finished_trials"] == 19
    scores = [r["val_acc"] for key in ("best", "fusion_comparison", "cost", "pareto") for r in s[key]]
    assert 0.99 not in scores and 0.95 not in scores


def test_pruned_fusion_cells_are_shown_but_never_selected(report) -> None:
    s = report.summary
    cut = {(r["pair"], r["fusion"]): (r["val_acc"], r["trials"]) for r in s["fusion_pruned"]}
    # matmul: best of its two pruned trials; sum has a finished trial, so its pruned .99 is not a pruned cell.
    assert cut == {
        ("dec + enc", "matmul"): (0.64, 2),
        ("enc + emb", "concat"): (0.60, 1),
        ("dec + enc", "moe"): (0.55, 1),
    }
    assert {r["fusion"] for r in s["fusion_comparison"]} == {"concat", "hadamard", "sum", "residual:quaternion"}
    md = (report.out_dir / "report.md").read_text()
    assert "| matmul | pruned (0.6400) | pruned (0.6000) |" not in md  # each cell sits in its own pair's column
    assert "| matmul | pruned (0.6400) | — |" in md and "| moe | pruned (0.5500) (search) | — |" in md
    assert "Pairs with every fusion pruned (no row above): toy enc + emb." in md
    assert (
        "| toy | dec + enc | concat | 4 / 2 |" in md
    )  # finished: concat, hadamard, sum, residual:quaternion; pruned: matmul, moe
    # residual:quaternion only ran in the search study, with its own layers: its cell says so.
    assert "| residual:quaternion | 0.8700 / 0.8500 (search) | — |" in md and "| sum | 0.8600 / 0.8700 | — |" in md


def test_files_pngs_decode_and_html_embeds_every_image(report) -> None:
    import matplotlib.image

    names = {p.name for p in report.out_dir.iterdir()}
    assert names == EXPECTED_PNGS | {"report.md", "report.html", "best_layers.csv", "summary.json"}
    assert sorted(names) == report.summary["files"] == sorted(p.name for p in report.files)
    for name in EXPECTED_PNGS:
        pixels = matplotlib.image.imread(report.out_dir / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500, name
        assert pixels[..., :3].std() > 0.05 and (pixels[..., :3] < 0.5).mean() > 0.005, f"{name} looks blank"
    html = (report.out_dir / "report.html").read_text()
    md = (report.out_dir / "report.md").read_text()
    for name in EXPECTED_PNGS:
        assert f'data-file="{name}"' in html and f"]({name})" in md
    assert html.count('src="data:image/png;base64,') == len(EXPECTED_PNGS) and "<table>" in html
    assert "(test)" in md and "val acc" in md and "validation-selected" in md
    assert "No accuracy-by-layer figure for emb: a single layer was scored" in md


def test_files_are_logged_once_on_a_report_run(store, report) -> None:
    cfg, parents, _ = store
    mlc = MlflowClient(cfg.tracking.uri)
    assert report.parent_runs == sorted(parents[s] for s in REPORTED) == report.summary["parent_runs"]
    run = mlc.get_run(report.run_id)
    assert report.summary["report_run_id"] == report.run_id and run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_KIND] == tracking.KIND_REPORT
    assert run.data.tags[tracking.TAG_REPORT_STUDIES].split(",") == sorted(REPORTED)
    # toy and toy2 are two experiments: a report spanning both lives in layerfuse/reports
    assert mlc.get_experiment(run.info.experiment_id).name == tracking.REPORTS_EXPERIMENT
    assert {a.path for a in mlc.list_artifacts(report.run_id)} == set(report.summary["files"])
    for study in REPORTED:
        assert mlc.get_run(parents[study]).data.tags[tracking.TAG_REPORT_RUN] == report.run_id
        assert not mlc.list_artifacts(parents[study], "report"), study  # no copies on the parent runs
    assert tracking.TAG_REPORT_RUN not in mlc.get_run(parents["empty-toy"]).data.tags


def test_reproduce_command_is_layerfuse_fit_with_the_run_config(report) -> None:
    toy = rows_of(report.summary, "best", dataset="toy")[0]["command"]
    assert toy == (
        "layerfuse fit --dataset toy --layer dec=3 --layer enc=1 --fusion concat --seeds 3 "
        f"--set extract.limit={BEST_CONFIG['extract.limit']} --set train.lr={BEST_CONFIG['train.lr']}"
    )
    args = build_parser().parse_args(shlex.split(toy)[1:])
    assert args.layer == [("dec", "3"), ("enc", "1")] and (args.fusion, args.seeds) == ("concat", 3)
    cfg = load_config(None, args.sets, env={})
    assert (cfg.extract.limit, cfg.train.lr) == (BEST_CONFIG["extract.limit"], BEST_CONFIG["train.lr"])
    toy2 = rows_of(report.summary, "best", dataset="toy2")[0]["command"]  # no config.yaml: from the params
    assert toy2 == "layerfuse fit --dataset toy2 --layer dec=2 --fusion concat --seeds 1"


def test_single_study_report_force_and_formats(store) -> None:
    cfg, parents, root = store
    out = root / "single"
    result = write_report(cfg, studies=["sweep-toy2"], out_dir=out, formats=("md",))
    assert not (out / "report.html").exists()
    mlc = MlflowClient(cfg.tracking.uri)
    logged = {a.path for a in mlc.list_artifacts(result.run_id)}
    assert "summary.json" in logged and "acc_by_layer_dec.png" in logged
    # one study: the report run sits in that study's experiment
    assert mlc.get_run(result.run_id).info.experiment_id == mlc.get_run(parents["sweep-toy2"]).info.experiment_id
    with pytest.raises(UserError, match="already exists: pass --force"):
        write_report(cfg, studies=["sweep-toy2"], out_dir=out)
    (out / "stale.txt").write_text("from an earlier report")
    again = write_report(cfg, studies=["sweep-toy2"], out_dir=out, force=True)
    assert (out / "report.html").is_file() and not (out / "stale.txt").exists()
    assert again.summary["studies"] == ["sweep-toy2"]
    other = root / "not-a-report"
    (other / "keep.txt").parent.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="not a layerfuse report folder"):
        write_report(cfg, studies=["sweep-toy2"], out_dir=other, force=True)
    assert (other / "keep.txt").is_file()


def test_experiment_selects_its_studies(store) -> None:
    cfg, _, root = store
    result = write_report(cfg, experiments=["toy2"])
    assert result.out_dir == root / "reports" / "toy2" and result.summary["studies"] == ["sweep-toy2"]


BAD = {
    "unknown study": (
        {"studies": ["swep-toy2"]},
        r"unknown study 'swep-toy2'.* Did you mean 'sweep-toy2'\?.*Known studies: baseline-toy, empty-toy, ",
    ),
    "no finished trials": (
        {"studies": ["empty-toy"]},
        r"study 'empty-toy' has no finished trials \(1 fail, 1 pruned\); "
        r"run `layerfuse study --preset search --dataset toy`",
    ),
    "unknown experiment": (
        {"experiments": ["toy3"]},
        r"unknown experiment 'toy3'.* Known experiments: layerfuse/toy, layerfuse/toy2",
    ),
    "bad format": ({"studies": ["sweep-toy2"], "formats": ("md", "pdf")}, r"report format 'pdf' is not known"),
    "nothing named": ({}, r"name a study \(--study NAME\) or an experiment"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_clear_message(store, tmp_path, case) -> None:
    cfg, _, _ = store
    kwargs, message = BAD[case]
    with pytest.raises(UserError, match=message) as err:
        write_report(cfg, out_dir=tmp_path / "out", **kwargs)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_cli_report_reads_the_store_given_by_set(store, tmp_path, capsys) -> None:
    cfg, _, _ = store
    sets = [
        "--set",
        f"tracking.uri={cfg.tracking.uri}",
        "--set",
        f"tracking.artifact_root={cfg.tracking.artifact_root}",
    ]
    code = main(["report", "--study", "sweep-toy2", "--out", str(tmp_path / "cli"), "--format", "html", *sets])
    out, err = capsys.readouterr()
    assert (
        code == 0 and f"report written to {tmp_path / 'cli'}" in out and "report.html" in out and "report.md" not in out
    )
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["studies"] == ["sweep-toy2"]
    code = main(["report", "--study", "sweep-toy9", "--out", str(tmp_path / "bad"), *sets])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("layerfuse: error: unknown study 'sweep-toy9'") and err.count("\n") == 1
    # Reports read MLflow only: an Optuna --storage would be silently ignored, so the flag does not exist.
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--study", "sweep-toy2", "--storage", "sqlite:///optuna.db", *sets])
    assert exit_.value.code == 2 and "unrecognized arguments: --storage" in capsys.readouterr().err


def test_unknown_study_is_reported_before_an_existing_folder(store, tmp_path) -> None:
    cfg, _, _ = store
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("an earlier report or user data")
    with pytest.raises(UserError, match=r"unknown study 'swep-toy2'"):
        write_report(cfg, studies=["swep-toy2"], out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").is_file()


def test_unit_statistics_in_multi_model_last_k_cost_and_pareto(report) -> None:
    s = report.summary
    seeds = ("test_n", "test_mean", "test_std", "test_ci_low", "test_ci_high")
    (multi,) = s["multi_model"]  # seeds [.84, .85, .86]: mean .85, std .01, CI [.84, .86]
    assert [multi[k] for k in seeds] == pytest.approx([3, 0.85, 0.01, 0.84, 0.86])
    (lastk,) = [r for r in s["last_k"] if (r["agg"], r["k"]) == ("mean", 2)]  # seeds [.81, .82, .83]
    assert [lastk[k] for k in seeds] == pytest.approx([3, 0.82, 0.01, 0.81, 0.83])
    assert all(r["test_n"] == 1 and r["test_std"] is None for r in s["last_k"] if r is not lastk)
    cost = {r["n_models"]: r for r in s["cost"]}
    assert [cost[n]["test_mean"] for n in (1, 2, 3)] == pytest.approx([0.84, 0.86, 0.85])
    pareto = {r["config"]: r for r in s["pareto"]}  # search's dec@3: seeds [.83, .85, .84]
    assert [pareto["dec@3"][k] for k in seeds] == pytest.approx([3, 0.84, 0.01, 0.83, 0.85])
    assert pareto["emb@1 (residual:sum)"]["test_n"] == 1
    md = (report.out_dir / "report.md").read_text()
    multi_table = md.split("## Three or more models")[1].split("\n## ")[0]
    assert "| val acc | test acc (test) | test over units (test) |" in multi_table
    assert "| 0.8700 | 0.8500 | 0.8500 ± 0.0100 [0.8400, 0.8600] (n=3) |" in multi_table
    pareto_table = md.split("### Pareto front")[1].split("\n## ")[0]
    assert "| dec@3 | 1.00 | 2.000 | 0.8600 | 0.8400 | 0.8400 ± 0.0100 [0.8300, 0.8500] (n=3) |" in pareto_table
    last_k_table = md.split("## Last-k layer aggregation")[1].split("\n## ")[0]
    assert (
        "| toy | dec | mean | 2 | 1..3 | **0.8400** | 0.8200 | 0.8200 ± 0.0100 [0.8100, 0.8300] (n=3) |" in last_k_table
    )


def test_layer_grid_shows_validation_and_test(report) -> None:
    md = (report.out_dir / "report.md").read_text()
    grid = md.split("### Layer-wise accuracy on toy2 ")[1].split("\n#")[0]
    assert "| layer | dec (val / test) |" in grid
    # toy2 sweep: layer 2 chosen (val .70, test .72), layer 4 last (val .66, test .60)
    assert "| 2 | **0.7000 / 0.7200** |" in grid and "| 4 | 0.6600 / 0.6000 |" in grid


FILLED = {  # section -> (text when it has runs, text when it has none)
    "best": ("Re-train the best", "No trials of the neural presets"),
    "baseline": ("Fitted on the same train part", "No baseline runs"),
    "layers": ("### Best layer vs last layer", "No single-layer runs"),
    "last-k": ("k (val-selected)", "No last-k runs"),
    "fusion": ("### Fusion chosen on validation per pair", "No two-model runs"),
    "multi": ("One row per dataset and model set", "No runs with three or more models"),
    "paired": ("paired t-test over units (test)", "Needs both single-model and multi-model runs"),
    "cost": ("### Pareto front", "No run measured its cost"),
}
COST_PNGS = {"cost_vs_models.png", "acc_vs_cost.png"}
ALONE = {  # study -> (filled sections, PNGs); search-toy's emb has one layer: no figure of its own
    "sweep-toy": ({"best", "layers"}, {"acc_by_layer_dec.png", "acc_by_layer_enc.png"}),
    "lastk-toy": ({"best", "last-k", "cost"}, {"last_k_dec.png", *COST_PNGS}),
    "fusion-toy": ({"best", "fusion", "cost"}, {"fusion_comparison.png", *COST_PNGS}),
    "multi-toy": ({"best", "multi", "cost"}, COST_PNGS),
    "search-toy": (
        {"best", "layers", "fusion", "paired", "cost"},
        {"acc_by_layer_dec.png", "fusion_comparison.png", *COST_PNGS},
    ),
    "baseline-toy": ({"baseline"}, set()),
}


@pytest.mark.parametrize("study", sorted(ALONE))
def test_each_preset_reports_on_its_own(store, tmp_path, study) -> None:
    cfg, _, _ = store
    assert {s[0] for s in STUDIES} - {"empty-toy", "sweep-toy2"} == set(ALONE)  # every preset of the fixtures
    filled, pngs = ALONE[study]
    result = write_report(cfg, studies=[study], out_dir=tmp_path / study)
    names = {p.name for p in result.out_dir.iterdir()}
    assert names == pngs | {"report.md", "report.html", "best_layers.csv", "summary.json"}
    md = (result.out_dir / "report.md").read_text()
    for section, (full, empty) in FILLED.items():
        assert (full in md, empty in md) == ((True, False) if section in filled else (False, True)), section
    with (result.out_dir / "best_layers.csv").open() as fh:
        header, *rows = list(csv.reader(fh))
    assert header == list(BEST_LAST_COLUMNS) and bool(rows) == ("layers" in filled)


def test_each_report_is_a_run_and_an_unchanged_one_reuses_it(store, tmp_path) -> None:
    cfg, parents, _ = store
    mlc = MlflowClient(cfg.tracking.uri)
    parent = parents["sweep-toy2"]

    def logged(run_id: str) -> set[str]:
        return {a.path for a in mlc.list_artifacts(run_id)}

    both = write_report(cfg, studies=["sweep-toy2"], out_dir=tmp_path / "r")
    same = write_report(cfg, studies=["sweep-toy2"], out_dir=tmp_path / "r", force=True)
    assert same.run_id == both.run_id  # unchanged report: same content hash, same run
    md_only = write_report(cfg, studies=["sweep-toy2"], out_dir=tmp_path / "r", formats=("md",), force=True)
    assert md_only.run_id != both.run_id
    assert logged(md_only.run_id) == set(md_only.summary["files"]) and "report.html" not in md_only.summary["files"]
    assert "report.html" in logged(both.run_id)  # the older report stays whole in its own run
    assert mlc.get_run(parent).data.tags[tracking.TAG_REPORT_RUN] == md_only.run_id


@pytest.mark.slow
def test_report_at_reproduce_scale_stays_readable(tmp_path) -> None:
    """4 datasets x 6 presets, 3 seeds, models of 31, 7, 4 and 1 layers (what `layerfuse reproduce` reports)."""
    from PIL import Image
    from report_fixtures import SCALE_DATASETS, SCALE_MODELS, scale_studies

    studies = scale_studies()
    cfg, _ = build_store(tmp_path, studies)
    result = write_report(cfg, studies=[s[0] for s in studies], out_dir=tmp_path / "out")
    pngs = {p.name: Image.open(p).size for p in result.files if p.suffix == ".png"}
    assert "acc_by_layer_tfidf.png" not in pngs and "last_k_tfidf.png" not in pngs  # one layer: notes instead
    assert {f"acc_by_layer_{m}.png" for m in SCALE_MODELS if m != "tfidf"} <= set(pngs)
    assert all(w <= 1300 and h <= 2400 for w, h in pngs.values()), pngs  # the HTML shows them ~1100 px wide
    md = (result.out_dir / "report.md").read_text()
    assert md.startswith("# layerfuse report: 24 studies (") and len(md.splitlines()) < 700

    def table_rows(after: str) -> int:
        block = md.split(after, 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
        return block.count("\n") - 1  # minus the separator line under the header

    n_data, n_models = len(SCALE_DATASETS), len(SCALE_MODELS)
    assert table_rows("## Last-k layer aggregation") == n_data * n_models * 3  # one row per aggregation
    assert table_rows("### Fusion chosen on validation per pair") == n_data * n_models * (n_models - 1) // 2
    assert table_rows("## Three or more models") == n_data * 5  # 4 triples and the quadruple
    assert md.count("(n=3)") > 100


def test_tie_columns_on_the_fixture(report) -> None:
    with (report.out_dir / "best_layers.csv").open() as fh:
        rows = {(r["dataset"], r["model"]): r for r in csv.DictReader(fh)}
    dec, enc, toy2 = rows["toy", "dec"], rows["toy", "enc"], rows["toy2", "dec"]
    # dec: layer 3's units [.86, .84, .85] (SE .01 / sqrt 3); layers 2, 3 and 4 tied; the last layer (4) among them
    assert float(dec["val_acc_se"]) == pytest.approx(0.01 / math.sqrt(3))
    assert (dec["tied_with_best"], dec["tied_layers"], dec["top_layer"], dec["best_layer"]) == (
        "True",
        "2 3 4",
        "3",
        "3",
    )
    # enc and toy2: sweeps from before cross-validation, one value per layer: SE 0, ties only on equal accuracy
    assert (enc["tied_with_best"], enc["tied_layers"], float(enc["val_acc_se"])) == ("False", "1", 0.0)
    assert (toy2["tied_with_best"], toy2["tied_layers"], toy2["rule"]) == ("False", "2", "argmax")
    sets = {(t["ranking"], t["dataset"], t.get("model") or t.get("pair") or ""): t for t in report.summary["tie_sets"]}
    layers = sets["layer", "toy", "dec"]
    assert (layers["rule"], layers["best"], layers["chosen"]) == ("argmax", "3", "3")
    assert [t["candidate"] for t in layers["tied"]] == ["2", "3", "4"]
    # SE of the paired differences to layer 3: [-.04, .14, .05] and [-.04, .08, .05]
    se = [np.std(d, ddof=1) / math.sqrt(3) for d in ([-0.04, 0.14, 0.05], [0, 0, 0], [-0.04, 0.08, 0.05])]
    assert [t["diff_se"] for t in layers["tied"]] == pytest.approx(se)
    pair = sets["fusion", "toy", "dec + enc"]
    assert [t["candidate"] for t in pair["tied"]] == ["concat", "hadamard"] and pair["chosen"] == "concat"
    overall = sets["overall", "toy", ""]
    assert [t["candidate"] for t in overall["tied"]] == [
        "dec@3 + enc@1 (concat)",
        "dec@3 + enc@1 (hadamard)",
        "dec@3 + enc@1 + emb@1 (concat)",
    ]
    assert [t["test_acc"] for t in overall["tied"]] == [0.86, 0.84, 0.85]
    assert {(r["config"], r["test_acc"]) for r in report.summary["tied_configs"]} >= {
        ("dec@3 + enc@1 (hadamard)", 0.84)
    }


def test_report_names_the_rule_and_marks_tied_rows(report) -> None:
    md = (report.out_dir / "report.md").read_text()
    assert "Chosen by selection.rule = argmax" in md and "within one standard error" in md
    # the fixture's sweep-toy dec and three fusion-toy trials log cv/val_acc, the others only seed/val_acc;
    # dec's sweep has the per-layer artifact (4 layers besides its own), the other sweeps do not
    assert (
        "of 19 finished runs, 4 with per-unit cv/val_acc, 15 with per-seed seed/val_acc only; of 14 single-layer "
        "points, 4 from cv/sweep_val_acc.npy and 10 from their run alone" in md
    )
    grid = md.split("### Layer-wise accuracy on toy ")[1].split("\n#")[0]
    # dec's layers 2 and 4 are tied with the chosen layer 3 (bold); enc's layer 2 is not tied with its layer 1
    assert "| 2 | 0.8000 / 0.7900 ≈ | — / — | 0.7800 / 0.7700 |" in grid and "| 4 | 0.8200 / 0.8000 ≈ | — / — |" in grid
    tied = md.split("### Configurations tied with the best (validation)")[1].split("\n#")[0]
    assert "| toy | **dec@3 + enc@1 (concat)** | fusion-toy | 0 | 0.8800 |" in tied
    # val SE, diff SE (the tie criterion), units, GFLOPs and ms per text (the fixture's runs log no cost: dashes)
    assert "| toy | dec@3 + enc@1 (hadamard) | fusion-toy | 2 | 0.8800 | 0.0000 | 0.0000 | 3 | — | — | 0.8400 |" in tied
    assert "| dec + enc | concat | 4 / 2 | concat, hadamard |" in md
    assert "| hadamard | 0.8800 / 0.8400 ≈ |" in md
    # the cost table: the three-model concat is tied with the overall best, search's dec@3 ([.86] x 3) is not
    assert "| 48 | 2.00 | 3.500 | 0.3000 | yes |" in md and "| 16 | 1.00 | 2.000 | 0.1000 | no |" in md
    assert "| toy | logistic regression | 1 | **0.8000** | 0.7800 |" in md


def test_figure_2_shades_the_tied_layers(report) -> None:
    from benchmark.report.common.runs import load_runs
    from benchmark.report.compute import compute
    from benchmark.report.layers.figure import acc_by_layer

    cfg = load_config(env={}, **{"tracking.uri": report.summary["tracking_uri"]})
    c = compute(load_runs(cfg, ["sweep-toy"], []))
    dec = c.points[c.points["model"] == "dec"]
    fig = acc_by_layer(dec, c.best_last[c.best_last["model"] == "dec"], "dec")
    shaded = sorted(round(p.get_x() + 0.5) for p in fig.axes[0].patches)  # one span per tied layer
    assert shaded == [2, 3, 4]


def test_one_se_report_picks_the_shallowest_tied_layer(store, tmp_path) -> None:
    cfg, _, _ = store
    one_se = load_config(
        env={},
        **{
            "tracking.uri": cfg.tracking.uri,
            "tracking.artifact_root": cfg.tracking.artifact_root,
            "selection.rule": "one-se",
        },
    )
    result = write_report(one_se, studies=["sweep-toy"], out_dir=tmp_path / "one-se")
    (dec,) = [r for r in result.summary["best_layers"] if r["model"] == "dec"]
    assert (dec["best_layer"], dec["top_layer"], dec["rule"], dec["best_val_acc"]) == (2, 3, "one-se", 0.80)
    assert (
        result.summary["rule"] == "one-se"
        and "Chosen by selection.rule = one-se" in (result.out_dir / "report.md").read_text()
    )


def test_paired_tests_pair_the_same_fold_and_seed(tmp_path) -> None:
    """Units pair by (fold, seed), not by position; runs whose units are other fits are not paired, and say why."""
    from dataclasses import asdict

    from report_fixtures import _wrong, trial

    from benchmark.report.common.stats import paired_t

    cv3 = {"data.cv_folds": 3}
    # cv: the fusion has 3 folds x 2 seeds (u = fold * 2 + seed), the single model 3 folds x 1 seed, so the pairs
    # are the fusion's units 0, 2, 4 with the single model's 0, 1, 2; its seed-1 units (.90, wrong 10x) pair with
    # nothing. Wrong test examples: fusion [0] in each seed-0 unit; single [0, 1], [0, 1, 2], [1]: McNemar
    # (only fusion right vs only single right) 1 vs 0, 2 vs 0 (p = .5), 1 vs 1.
    fused = trial(
        "dec,enc",
        {"dec": "3", "enc": "1"},
        0.90,
        0.86,
        seeds=[0.80, 0.90, 0.82, 0.90, 0.84, 0.90],
        per_fold=2,
        preds=[_wrong([0]) if u % 2 == 0 else _wrong(list(range(10))) for u in range(6)],
        config=cv3,
    )
    single = trial(
        "dec",
        {"dec": "3"},
        0.85,
        0.79,
        seeds=[0.78, 0.79, 0.81],
        per_fold=1,
        preds=[_wrong([0, 1]), _wrong([0, 1, 2]), _wrong([1])],
        config=cv3,
    )
    split = {"data.cv_folds": 0}  # the single split: its 3 units are seeds, the single model's are folds
    resplit = {"data.cv_folds": 3, "data.split_seed": 1}  # 3 folds, but other folds
    studies = [
        ("cv-pairs", "search", "cv", [fused, single]),
        ("mixed-pairs", "search", "mixed", [{**fused, "per_fold": 3, "seeds": [0.8] * 3, "config": split}, single]),
        (
            "resplit-pairs",
            "search",
            "resplit",
            [{**fused, "per_fold": 1, "seeds": [0.8] * 3, "config": resplit}, single],
        ),
    ]
    cfg, _ = build_store(tmp_path, studies)
    result = write_report(cfg, studies=[s[0] for s in studies], out_dir=tmp_path / "pairs")
    tests = {p["dataset"]: p for p in result.summary["paired_tests"]}
    cv = tests["cv"]
    assert (cv["folds"], cv["units"], cv["notes"]) == (3, [{"fold": f, "seed": 0} for f in range(3)], [])
    assert cv["paired_t"] == pytest.approx(asdict(paired_t([0.80, 0.82, 0.84], [0.78, 0.79, 0.81])))
    assert cv["paired_t"]["n"] == 3 and cv["paired_t"]["mean_diff"] == pytest.approx(0.08 / 3)
    mcnemar = [(m["fold"], m["seed"], m["only_a"], m["only_b"], m["p_value"]) for m in cv["mcnemar"]]
    assert mcnemar == [(0, 0, 1, 0, 1.0), (1, 0, 2, 0, 0.5), (2, 0, 1, 1, 1.0)]
    md = (result.out_dir / "report.md").read_text()
    assert "fold 0 seed 0: 1 vs 0, p=1.0000; fold 1 seed 0: 2 vs 0, p=0.5000; fold 2 seed 0: 1 vs 1, p=1.0000" in md
    for dataset, why in (
        ("mixed", "the runs have different units (1 vs 3 folds of train)"),
        ("resplit", "the runs' units are different fits (data.split_seed 1 vs 0)"),
    ):
        p = tests[dataset]
        assert (p["units"], p["paired_t"], p["mcnemar"], p["notes"]) == ([], None, [], [f"not paired: {why}"])
        assert f"{dataset}: not paired: {why}." in md


def test_selection_regret_by_hand(report) -> None:
    rows = {r["dataset"]: r for r in report.summary["selection_regret"]}
    toy = rows["toy"]
    # Chosen on validation: dec@3 + enc@1 (concat), val .88, test .86. Best on test among the 18 finished toy
    # trials and the 6 swept layers that are not a trial's own: the concat at dec@2 (test .89).
    assert (toy["rule"], toy["candidates"], toy["best_test_acc"]) == ("argmax", 24, pytest.approx(0.89))
    assert toy["chosen_test_acc"] == pytest.approx(0.86) and toy["regret"] == pytest.approx(-0.03)
    assert toy["best_test_config"].startswith("dec@2 + enc@1")
    # No refits in the fixture: compared on fold heads. TF-IDF logreg tests .78 (+.08); the chosen single model,
    # the search's dec@3, .84 (+.02): both beaten by >= 0.5 points.
    assert toy["basis"] == "fold heads"
    assert (toy["vs_baseline"], toy["beats_baseline"]) == (pytest.approx(0.08), True)
    assert (toy["vs_single"], toy["beats_single"]) == (pytest.approx(0.02), True)
    # toy2 has one candidate layer sweep: its choice (layer 2, test .72) is also the best on test.
    assert rows["toy2"]["regret"] == pytest.approx(0.0) and rows["toy2"]["candidates"] == 5
    md = (report.out_dir / "report.md").read_text()
    assert "Selection regret (test, a diagnostic)" in md and "+0.0800 (beats)" in md
