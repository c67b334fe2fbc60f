"""Layer-spec syntax and the aggregation registry."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.registry import UnknownNameError
from lightning_modules.layers import AGGREGATIONS, LayerSpec, LayerSpecError, parse_layer_spec


@pytest.mark.parametrize(
    ("text", "layers", "agg", "canonical"),
    [
        ("16", (16,), None, "16"),
        ("-1", (-1,), None, "-1"),
        ("last", (-1,), None, "-1"),
        (" LAST ", (-1,), None, "-1"),
        ("mean:last4", (-4, -3, -2, -1), "mean", "mean:last4"),
        ("max:3,5,7", (3, 5, 7), "max", "max:3,5,7"),
        ("min:-3,-2,-1", (-3, -2, -1), "min", "min:last3"),
        ("mean:0,-1", (0, -1), "mean", "mean:0,-1"),
    ],
)
def test_parse_and_round_trip(text: str, layers: tuple[int, ...], agg: str | None, canonical: str) -> None:
    spec = parse_layer_spec(text)
    assert spec == LayerSpec(layers, agg)
    assert str(spec) == canonical
    assert parse_layer_spec(str(spec)) == spec


def test_ints_and_specs_pass_through() -> None:
    assert parse_layer_spec(3) == LayerSpec((3,))
    spec = LayerSpec((1, 2), "max")
    assert parse_layer_spec(spec) is spec


@pytest.mark.parametrize("text", ["", "abc", "mean:", "mean:1,x", "mean:last0", "1.5", "mean:lastx"])
def test_bad_syntax_names_examples(text: str) -> None:
    with pytest.raises(LayerSpecError, match="mean:last4|last"):
        parse_layer_spec(text)


def test_unknown_aggregation_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'mean'.*max, mean, min"):
        parse_layer_spec("meen:last2")


def test_repeated_layer_is_an_error() -> None:
    with pytest.raises(LayerSpecError, match="repeats"):
        parse_layer_spec("mean:3,3")
    with pytest.raises(LayerSpecError, match="same layer twice"):
        parse_layer_spec("mean:3,-1").resolve(3)


def test_resolve_counts_from_the_end_and_names_the_range() -> None:
    assert parse_layer_spec("-1").resolve(12) == (12,)
    assert parse_layer_spec("mean:last3").resolve(12) == (10, 11, 12)
    assert parse_layer_spec("0").resolve(12) == (0,)
    with pytest.raises(LayerSpecError, match=r"valid layers are 0\.\.12 or -1\.\.-13"):
        parse_layer_spec("13").resolve(12)
    with pytest.raises(LayerSpecError, match="does not exist"):
        parse_layer_spec("mean:last14").resolve(12)


def test_aggregations_equal_hand_computation() -> None:
    stack = np.array(
        [[[1.0, -2.0], [3.0, 0.0]], [[5.0, 2.0], [-1.0, 4.0]], [[0.0, 8.0], [2.0, 2.0]]], dtype=np.float32
    )  # (3, 2, 2)
    assert AGGREGATIONS.names() == ["max", "mean", "min"]
    np.testing.assert_allclose(AGGREGATIONS.get("mean")(stack), [[2.0, 8.0 / 3], [4.0 / 3, 2.0]], rtol=1e-6)
    np.testing.assert_array_equal(AGGREGATIONS.get("max")(stack), [[5.0, 8.0], [3.0, 4.0]])
    np.testing.assert_array_equal(AGGREGATIONS.get("min")(stack), [[0.0, -2.0], [-1.0, 0.0]])
