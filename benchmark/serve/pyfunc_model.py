"""The exported layerfuse classifier at inference time: raw texts in, labels and class probabilities out.

An exported MLflow model holds one artifact folder, the *bundle* (written by ``benchmark.serve.model_export``):

    layerfuse_model.json   members, head hyper-parameters, label names, provenance
    net.safetensors        FusionNet weights (projections, fusion, MLP head)
    scalers.npz            mean_<i>, std_<i>: input i's standardisation statistics (train rows)
    members/<i>/           per member: a Hugging Face folder cut after its highest used layer, or tfidf.pkl

Each member turns texts into the features the head was trained on, the way ``layerfuse extract`` cached them
(same tokenizer, prefix, max length, pooling, dtype policy, float16 rounding), then selects or aggregates its
layers and standardises them with the training statistics. ``TextClassifier`` wraps a bundle as an
``mlflow.pyfunc.PythonModel`` typed ``list[str]``; it needs only the code shipped with the model (``code_paths``).
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel

from benchmark.core import tracking

log = logging.getLogger(__name__)

BUNDLE_FILE = "layerfuse_model.json"
NET_FILE, SCALERS_FILE = tracking.HEAD_NET_FILE, tracking.HEAD_SCALERS_FILE  # the refit head's files
TFIDF_FILE = "tfidf.pkl"
LABEL_COLUMN = "label"
PROB_PREFIX = "prob_"
FORMAT_VERSION = 1


class WeightsMismatchError(RuntimeError):
    """Referenced weights whose hash differs from the one recorded at export."""


def _hf_member(member: dict[str, Any], root: Path, device: str) -> Any:
    from benchmark.core.hardware import resolve_token_budget
    from benchmark.core.models import ModelSpec, weights_sha256
    from extractors.hf import HFHiddenStateExtractor
    from extractors.truncate import strip_final_norm, truncate

    if "folder" in member:
        path, gguf = str(root / member["folder"]), None
    else:  # --weights reference: the original weights, checked against the recorded hash, cut after loading
        path, gguf = member["source"], member.get("gguf_file")
        if not Path(path).is_dir():
            from huggingface_hub import snapshot_download

            path = snapshot_download(path, revision=member.get("revision") or None)
        found = weights_sha256(path)
        if found != member["weights_sha256"]:
            raise WeightsMismatchError(
                f"model '{member['alias']}': weights at {path} have sha256 {found[:16]}..., the exported model was "
                f"trained on {member['weights_sha256'][:16]}...; restore those weights or export with copied weights"
            )
    spec = ModelSpec(
        alias=member["alias"],
        hf_id=member["alias"],
        kind=member["kind"],
        num_layers=member["num_layers"],
        hidden_size=member["hidden_size"],
        default_pooling=member["pooling"],
        max_length=member["max_length"],
        gguf_file=gguf,
        prefix=member.get("prefix", ""),
        path=path,
    )
    budget = resolve_token_budget(0, device)  # padded tokens per forward pass, as extraction batches on this device
    ext = HFHiddenStateExtractor(
        spec, device, member["dtype"], member["pooling"], member["max_length"], token_budget=budget
    )
    if "folder" in member:
        if member["cut"]:
            strip_final_norm(ext.model)
    else:
        truncate(ext.model, member["cut_at"])
    return ext


class Member:
    """One member model of the configuration: texts -> its standardised ``(n, H)`` float32 input to the head.

    Args:
        member: Its entry of ``layerfuse_model.json``.
        root: The bundle folder.
        mean, std: Its standardisation statistics (None: not standardised).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(
        self, member: dict[str, Any], root: Path, mean: np.ndarray | None, std: np.ndarray | None, device: str
    ) -> None:
        self.info = member
        self.layers: list[int] = list(member["layers"])
        self.agg: str | None = member.get("agg")
        self.mean, self.std = mean, std
        if member["kind"] == "lexical":
            with (root / member["folder"] / TFIDF_FILE).open("rb") as fh:
                self.extractor = pickle.load(fh)  # noqa: S301 - the bundle's own fitted vectorizer
        else:
            self.extractor = _hf_member(member, root, device)

    def features(self, texts: list[str]) -> np.ndarray:
        """Standardised ``(n, H)`` float32 features of ``texts``, in input order."""
        from lightning_modules.features import aggregate_layers, standardise

        ids = self.extractor.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))  # longest first, as extraction runs
        states, _ = self.extractor.encode_ids([ids[i] for i in order])  # (L+1, n, H) float16, sorted order
        unsorted = np.empty_like(states)
        unsorted[:, order] = states
        raw = aggregate_layers([unsorted[layer] for layer in self.layers], self.agg)
        return standardise(raw, self.mean, self.std)


class Bundle:
    """A loaded bundle: members, head and label names.

    Args:
        root: The bundle folder.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    def __init__(self, root: str | Path, device: str = "auto") -> None:
        from safetensors.torch import load_file

        from benchmark.core.hardware import resolve_device
        from lightning_modules.components.net import FusionNet

        self.root = Path(root)
        self.meta = json.loads((self.root / BUNDLE_FILE).read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{self.root}: bundle format {self.meta.get('format')} is not {FORMAT_VERSION}")
        self.device = resolve_device(device)
        scalers = np.load(self.root / SCALERS_FILE)
        self.members = [
            Member(m, self.root, scalers.get(f"mean_{i}"), scalers.get(f"std_{i}"), self.device)
            for i, m in enumerate(self.meta["members"])
        ]
        self.label_names: list[str] = list(self.meta["label_names"])
        self.net = FusionNet(**self.meta["net"])
        self.net.load_state_dict(load_file(str(self.root / NET_FILE)))
        self.net.eval()

    @property
    def columns(self) -> list[str]:
        """Output columns: ``label`` then ``prob_<class>`` per class, label id order."""
        return [LABEL_COLUMN, *(f"{PROB_PREFIX}{name}" for name in self.label_names)]

    @torch.inference_mode()
    def probabilities(self, texts: list[str]) -> np.ndarray:
        """``(n, C)`` class probabilities of ``texts`` (float64 rows summing to 1)."""
        if not texts:
            return np.zeros((0, len(self.label_names)))
        xs = [torch.from_numpy(m.features(texts)) for m in self.members]  # k x (n, H_i)
        logits = self.net(xs)  # (n, C)
        return torch.softmax(logits.double(), dim=-1).numpy()

    def predict(self, texts: list[str]) -> pd.DataFrame:
        """``label`` (the dataset's label names) and one ``prob_<class>`` column per class."""
        probs = self.probabilities(texts)
        out = pd.DataFrame(probs, columns=self.columns[1:])
        out.insert(0, LABEL_COLUMN, [self.label_names[i] for i in probs.argmax(axis=1)])
        return out


class TextClassifier(PythonModel):
    """The pyfunc model: ``predict`` takes a list of texts and returns ``label`` plus ``prob_<class>`` columns.

    The ``list[str]`` type hint is the model's signature: MLflow refuses anything else before ``predict`` runs (a
    number, a missing text, a dict; over HTTP any payload but ``{"inputs": [...]}``) with a bad request (400). A
    DataFrame passed in Python reaches ``predict`` as the list of its first string column (MLflow's conversion).
    """

    def load_context(self, context: Any) -> None:
        """Load the bundle artifact (on CUDA when available)."""
        self.bundle = Bundle(context.artifacts["bundle"], (context.model_config or {}).get("device", "auto"))

    def __getstate__(self) -> dict[str, Any]:
        # MLflow loads the context to run the input example before it pickles the model: the loaded bundle (member
        # models that do not pickle, and their weights) stays out of python_model.pkl; ``load_context`` rebuilds it.
        return {k: v for k, v in self.__dict__.items() if k != "bundle"}

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Classify the texts of ``model_input``, in order."""
        return self.bundle.predict(model_input)
