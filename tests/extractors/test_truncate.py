"""Cutting a HF model after layer L keeps hidden states 0..L bit-equal to the full model's (tiny local models)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from extractors.truncate import TruncateError, param_count, strip_final_norm, truncate


def _states(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states


@pytest.mark.parametrize(("name", "layer"), [("llama-left", 1), ("llama-left", 2), ("llama-left", 0), ("bert-a", 1)])
def test_cut_model_states_equal_the_full_models(tiny_models, name: str, layer: int) -> None:
    full = AutoModel.from_pretrained(tiny_models[name]).eval()
    cut = AutoModel.from_pretrained(tiny_models[name]).eval()
    n = full.config.num_hidden_layers
    assert truncate(cut, layer) is True
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 10, 11, 12]])
    mask = (ids != 0).long()
    want, got = _states(full, ids, mask), _states(cut, ids, mask)
    kept = max(layer, 1)  # layer 0 keeps one block (hook-recorded states need one)
    assert len(want) == n + 1 and len(got) == kept + 1
    for i in range(kept + 1):
        torch.testing.assert_close(got[i], want[i], rtol=0, atol=0)
    if name.startswith("llama") and layer:
        # Without the cut's identity norm, the last state would be the normed one, not layer L's.
        assert not torch.equal(full.norm(want[layer]), want[layer])
    assert param_count(cut) < param_count(full)


def test_a_cut_saved_with_its_norm_loads_equal_after_strip(tiny_models, tmp_path) -> None:
    full = AutoModel.from_pretrained(tiny_models["llama-right"]).eval()
    cut = AutoModel.from_pretrained(tiny_models["llama-right"]).eval()
    truncate(cut, 2, strip_norm=False)
    cut.save_pretrained(tmp_path / "cut")
    loaded = AutoModel.from_pretrained(tmp_path / "cut").eval()
    assert loaded.config.num_hidden_layers == 2 and len(loaded.layers) == 2
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    torch.testing.assert_close(_states(loaded, ids, mask)[2], _states(full, ids, mask)[2], rtol=0, atol=0)
    strip_final_norm(loaded)
    torch.testing.assert_close(_states(loaded, ids, mask)[2], _states(full, ids, mask)[2], rtol=0, atol=0)


def test_last_layer_keeps_the_model_whole_and_bad_layers_raise(tiny_models) -> None:
    model = AutoModel.from_pretrained(tiny_models["llama-left"])
    before = param_count(model)
    assert truncate(model, 3) is False and param_count(model) == before
    assert not isinstance(model.norm, torch.nn.Identity)
    with pytest.raises(TruncateError, match="0..3"):
        truncate(model, 4)
