"""Progress bars that libraries draw while a model loads: off with ``--no-progress``.

transformers draws its weight-loading bars through its own switch, and its GGUF loader a plain ``tqdm`` bar
("Converting and de-quantizing GGUF tensors") that no switch reaches, so that module's ``tqdm`` is swapped for a
disabled one while the model loads. With progress on, both stay: each is the one bar of a long step.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from contextlib import contextmanager

GGUF_MODULE = "transformers.modeling_gguf_pytorch_utils"


@contextmanager
def library_bars(show: bool) -> Iterator[None]:
    """Leave library bars as they are when ``show``, else silence them for the block."""
    if show:
        yield
        return
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    gguf = importlib.import_module(GGUF_MODULE)
    original = getattr(gguf, "tqdm")  # noqa: B009 - the module's own name for the bar it draws
    setattr(gguf, "tqdm", functools.partial(tqdm, disable=True))  # noqa: B010
    try:
        yield
    finally:
        setattr(gguf, "tqdm", original)  # noqa: B010
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
