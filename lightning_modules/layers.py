"""Layer specs: which hidden state(s) of a cached model feed the classifier, and how several are aggregated.

Syntax (paper Sec. 3.1; ``str(parse_layer_spec(s))`` is canonical and parses back to an equal spec):

============================  ==============================================================
``"16"``                      layer 16 (0 = embeddings, L = last transformer layer)
``"-1"``, ``"last"``          the last layer (negative indices count from the end; canonical ``-1``)
``"mean:last4"``              element-wise mean of the last 4 layers (``max``/``min`` likewise)
``"max:3,5,7"``               element-wise max of layers 3, 5 and 7 (negative indices allowed)
============================  ==============================================================

Aggregations live in ``AGGREGATIONS`` (mean, max, min); each maps a stack ``(k, B, H)`` to ``(B, H)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.registry import Registry

Aggregation = Callable[[np.ndarray], np.ndarray]
AGGREGATIONS: Registry[Aggregation] = Registry("aggregation")


@AGGREGATIONS.register("mean")
def _mean(stack: np.ndarray) -> np.ndarray:
    """Element-wise mean over the layer axis: ``(k, B, H) -> (B, H)``."""
    return cast(np.ndarray, stack.mean(axis=0))


@AGGREGATIONS.register("max")
def _max(stack: np.ndarray) -> np.ndarray:
    """Element-wise max over the layer axis: ``(k, B, H) -> (B, H)``."""
    return cast(np.ndarray, stack.max(axis=0))


@AGGREGATIONS.register("min")
def _min(stack: np.ndarray) -> np.ndarray:
    """Element-wise min over the layer axis: ``(k, B, H) -> (B, H)``."""
    return cast(np.ndarray, stack.min(axis=0))


class LayerSpecError(UserError, ValueError):
    """A layer spec string that does not parse, or does not fit a model's layer count."""


_SYNTAX = "use e.g. '16', '-1', 'last', 'mean:last4' or 'max:3,5,7'"
_LAST_K = re.compile(r"last(\d+)")


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One feature source inside a cache: a single layer, or an aggregation over several.

    Attributes:
        layers: Layer indices as written (negative ones count from the end); one index when ``agg`` is None.
        agg: Name in ``AGGREGATIONS``, or None for a single layer.
    """

    layers: tuple[int, ...]
    agg: str | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise LayerSpecError(f"layer spec has no layers; {_SYNTAX}")
        if self.agg is None and len(self.layers) != 1:
            raise LayerSpecError(
                f"layers {self.layers} need an aggregation: write e.g. 'mean:{','.join(map(str, self.layers))}'"
            )
        if self.agg is not None:
            AGGREGATIONS.get(self.agg)  # raises UnknownNameError listing mean, max, min
            if len(set(self.layers)) != len(self.layers):
                raise LayerSpecError(f"layer spec '{self}' repeats a layer; list each layer once")

    def __str__(self) -> str:
        if self.agg is None:
            return str(self.layers[0])
        k = len(self.layers)
        if self.layers == tuple(range(-k, 0)):
            return f"{self.agg}:last{k}"
        return f"{self.agg}:{','.join(map(str, self.layers))}"

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        """Absolute layer indices in ``0..num_layers`` for a model with ``num_layers`` transformer layers.

        Raises:
            LayerSpecError: an index outside ``-(L+1)..L``, naming the valid range; or two entries naming one layer.
        """
        total = num_layers + 1
        bad = [i for i in self.layers if not -total <= i < total]
        if bad:
            raise LayerSpecError(
                f"layer spec '{self}': layer {bad[0]} does not exist; valid layers are 0..{num_layers} or -1..-{total}"
            )
        out = tuple(i % total for i in self.layers)
        if len(set(out)) != len(out):
            raise LayerSpecError(f"layer spec '{self}' names the same layer twice for a model with {num_layers} layers")
        return out


def parse_layer_spec(text: str | int | LayerSpec) -> LayerSpec:
    """Parse the layer-spec syntax of this module (ints and ready specs pass through).

    Raises:
        LayerSpecError: text that is not valid syntax, with examples.
        UnknownNameError: an unknown aggregation, with the valid names.
    """
    if isinstance(text, LayerSpec):
        return text
    if isinstance(text, int):
        return LayerSpec((text,))
    s = str(text).strip().lower()
    if s == "last":
        return LayerSpec((-1,))
    if ":" not in s:
        try:
            return LayerSpec((int(s),))
        except ValueError:
            raise LayerSpecError(f"layer spec {text!r} is not valid; {_SYNTAX}") from None
    agg, _, body = s.partition(":")
    if m := _LAST_K.fullmatch(body):
        k = int(m.group(1))
        if k < 1:
            raise LayerSpecError(f"layer spec {text!r}: last{k} needs k >= 1, e.g. '{agg}:last4'")
        return LayerSpec(tuple(range(-k, 0)), agg)
    try:
        layers = tuple(int(p) for p in body.split(","))
    except ValueError:
        raise LayerSpecError(f"layer spec {text!r} is not valid; {_SYNTAX}") from None
    return LayerSpec(layers, agg)
