"""The registered fusions' names and one-line descriptions, importable without torch.

Listing fusions (``layerfuse ls fusions``) and refusing a misspelt one (``--fusion``, ``study.fusions``) answer from
here at once, before torch loads. ``lightning_modules.components.fusion`` registers the modules in ``FUSIONS`` and
checks at import that the registry holds exactly these names, so this index cannot drift from it.
"""

from __future__ import annotations

from benchmark.core.registry import UnknownNameError, suggest

RESIDUAL_PREFIX = "residual:"
FUSION_LINES = {
    "all": 'Every other fusion applied to the same projected inputs, outputs concatenated (paper: "All Methods").',
    "concat": "Eq. 1: ``[x_1 || ... || x_k]``, width ``sum_i d_i`` (``k * d`` after projection).",
    "hadamard": "Element-wise product ``x_1 * ... * x_k``, width d.",
    "matmul": "Eq. 3: reshape each input to ``s x s`` (``s = sqrt(d)``), multiply left to right, flatten; width d.",
    "moe": "Mixture of experts: ``sum_e g_e(x) * expert_e(.)`` with a softmax gate over ``[x_1 || ... || x_k]``.",
    "quaternion": "Each input is ``d/4`` quaternions ``r + i x + j y + k z`` (its four consecutive quarters).",
    "sum": "Eq. 2: ``sum_i x_i``, width d.",
}
RESIDUAL_LINE = "any fusion plus a residual connection to the mean projected input"


def fusion_names(residual: bool = True) -> list[str]:
    """Every valid fusion name: the registry's, then their ``residual:`` forms."""
    names = sorted(FUSION_LINES)
    return names + [RESIDUAL_PREFIX + n for n in names] if residual else names


def check_fusion(name: str, where: str) -> str:
    """``name`` when it is a valid fusion, else an ``UnknownNameError`` naming ``where`` it came from and the fix."""
    valid = fusion_names()
    if name not in valid:
        raise UnknownNameError(f"{where}: unknown fusion {name!r}.{suggest(name, valid)} See `layerfuse ls fusions`")
    return name
