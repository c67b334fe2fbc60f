"""Report folders are one to one with their studies, and a killed report's temporary folder is removed."""

from __future__ import annotations

from pathlib import Path

from fault_helpers import dead_pid


def test_report_folders_are_one_to_one_with_the_studies_they_report() -> None:
    """``ü`` and ``é`` (and ``a b`` against ``a_b``) no longer share a folder; plain names keep theirs."""
    from benchmark.report.export import _name

    names = [_name([s], []) for s in ("ü", "é", "a b", "a_b", "x", "layer-sweep-mr-minilm-l6")]
    assert len(set(names)) == len(names)
    assert names[-2:] == ["x", "layer-sweep-mr-minilm-l6"]
    assert _name(["a", "b"], []) != _name(["a+b"], [])  # two studies, or one whose name holds the separator


def test_reports_of_studies_u_and_e_never_replace_each_other_and_stale_folders_go(tmp_path) -> None:
    """Studies ``ü`` and ``é`` get their own report folders, ``--force`` on one keeps the other, and a killed
    report's ``.NAME.tmp-PID`` folder is removed by the next report."""
    import json

    from report_fixtures import STUDIES, build_store

    from benchmark.report import write_report

    _, preset, dataset, trials = STUDIES[0]
    cfg, _ = build_store(tmp_path, [("ü", preset, dataset, trials), ("é", preset, dataset, trials)])
    reports = Path(cfg.report.out_dir)
    killed = reports / f".x.tmp-{dead_pid()}"
    (killed / "figures").mkdir(parents=True)
    first = write_report(cfg, studies=["ü"], formats=("md",))
    assert not killed.exists()
    second = write_report(cfg, studies=["é"], formats=("md",))
    assert first.out_dir != second.out_dir
    write_report(cfg, studies=["é"], formats=("md",), force=True)
    assert json.loads((first.out_dir / "summary.json").read_text())["studies"] == ["ü"]
    assert json.loads((second.out_dir / "summary.json").read_text())["studies"] == ["é"]
    assert not [p for p in reports.iterdir() if ".tmp-" in p.name]
