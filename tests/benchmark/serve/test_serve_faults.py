"""predict reads texts as training does and never leaves a half-written output file."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.core.errors import UserError


def test_predict_reads_texts_as_training_does(tmp_path) -> None:
    """predict's input: a JSON array (not read as one line of columns), a tab-separated .csv, trimmed texts, null."""
    from benchmark.serve.predict import read_table, texts_of

    array, tabs = tmp_path / "in.json", tmp_path / "in.csv"
    array.write_text('[{"id": 1, "text": " good "},\n {"id": 2, "text": null}]\n')
    tabs.write_text("id\ttext\n1\t good film \n2\tbad, really\n")
    assert texts_of(read_table(array), "text", array) == ["good", ""]
    assert texts_of(read_table(tabs), "text", tabs) == ["good film", "bad, really"]
    (tmp_path / "numbers.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(UserError, match=r"row 1 of column 'text' is 3 \(int\), not a text"):
        texts_of(read_table(tmp_path / "numbers.jsonl"), "text", tmp_path / "numbers.jsonl")


def test_a_failed_prediction_write_leaves_no_output_file(tmp_path, monkeypatch) -> None:
    """Own case: predictions are written to a hidden temporary file and moved into place, never half-written."""
    import pandas as pd

    from benchmark.serve import predict

    src = tmp_path / "in.csv"
    src.write_text("text\ngood\nbad\n")
    out = tmp_path / "out" / "scored.csv"

    class Model:
        def predict(self, texts: list[str]) -> pd.DataFrame:
            return pd.DataFrame({"label": ["pos"] * len(texts), "prob_pos": [1.0] * len(texts)})

    monkeypatch.setattr(predict, "load_model", lambda uri: Model())

    def full_disk(self: pd.DataFrame, path: Path, **kw: object) -> None:
        Path(path).write_text("text,label\ngo")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OSError, match="No space"):
        predict.predict_file("m", src, out, show_progress=False)
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(predict, "load_model", lambda uri: Model())
    assert predict.predict_file("m", src, out, show_progress=False).rows == 2
    assert out.read_text().splitlines() == ["text,label,prob_pos", "good,pos,1.0", "bad,pos,1.0"]
