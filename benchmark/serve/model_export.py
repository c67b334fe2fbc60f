"""``export_model``: a study's chosen configuration as an MLflow pyfunc model that reads raw text.

The model is built from the refit of the chosen trial (``studies.choice.refit``; run first when missing): its head
for one seed, and per member model the weights cut after the highest layer the configuration uses
(``extractors.truncate``), the tokenizer, pooling, max length and dtype policy of the features it was trained
on, or for ``tfidf`` the fitted vectorizer and SVD. It is logged under the refit run as ``model``, optionally
registered with an alias, and optionally saved to a folder. See ``benchmark.serve.pyfunc_model`` for the layout.
"""

from __future__ import annotations

import errno
import importlib.metadata as md
import json
import logging
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.config import BenchConfig
from benchmark.core.errors import UserError
from benchmark.core.keys import load_text_split, resolve_features
from benchmark.core.models import LEXICAL, ModelSpec, weights_sha256
from benchmark.core.stores import check_folder_path
from benchmark.core.text_data import class_names
from benchmark.serve.pyfunc_model import (
    BUNDLE_FILE,
    FORMAT_VERSION,
    NET_FILE,
    SCALERS_FILE,
    TFIDF_FILE,
    TextClassifier,
)
from lightning_modules.layers import parse_layer_spec
from studies.choice.refit import choose, refit_study, trial_config

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

WEIGHTS_MODES = ("copy", "reference")
CODE_PACKAGES = ("benchmark", "extractors", "lightning_modules")  # what loading imports (shipped as code_paths)
BASE_REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas")
# torch's wheels differ by platform under one version (PyPI's Linux wheel bundles CUDA; a ``+cpu`` build comes from
# PyTorch's own index), so requirements pin the version only and the model's metadata says how to get either.
TORCH_INDEX = "https://download.pytorch.org/whl"
# Not shipped with a model: caches of compiled code, and the speed benchmarks (never installed either).
CODE_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "bench")
SPACE_MARGIN = 1.2  # free space asked of --out's disk: the model's size with room for the files MLflow adds


@dataclass(frozen=True)
class ExportResult:
    """Where an exported model went."""

    model_uri: str
    refit_run_id: str
    registered: str | None
    version: str | None
    out: Path | None
    bundle_bytes: int


def _member(tcfg: BenchConfig, model: str, spec_text: str, folder: Path, weights: str) -> dict[str, Any]:
    """Write member ``model``'s files into ``folder`` and return its ``layerfuse_model.json`` entry."""
    from benchmark.core.cache import FeatureCache

    rf = resolve_features(tcfg, model, load_text_split(tcfg, "train"))
    cache = FeatureCache(rf.path)
    spec = parse_layer_spec(spec_text)
    layers = list(spec.resolve(cache.num_layers))
    entry: dict[str, Any] = {
        "alias": model,
        "kind": rf.spec.kind,
        "layers": layers,
        "agg": spec.agg,
        "layer_spec": str(spec),
        "num_layers": cache.num_layers,
        "hidden_size": cache.hidden_size,
        "pooling": rf.key.pooling,
        "max_length": rf.key.max_length,
        "dtype": rf.key.dtype,
        "prefix": rf.spec.prefix,
        "cut_at": max(layers),
    }
    if rf.spec.kind == LEXICAL:
        from extractors.tfidf import TfidfExtractor

        folder.mkdir(parents=True)
        fitted = TfidfExtractor(rf.split.texts, rf.spec.hidden_size)  # seeded: the fit the cache was written with
        with (folder / TFIDF_FILE).open("wb") as fh:
            pickle.dump(fitted, fh)
        return {**entry, "folder": folder.name}
    if weights == "reference":
        source = rf.spec.path or rf.spec.hf_id
        local = rf.spec.path
        if local is None:
            from huggingface_hub import snapshot_download

            local = snapshot_download(rf.spec.hf_id, revision=rf.spec.revision)
        return {
            **entry,
            "source": source,
            "revision": rf.spec.revision if rf.spec.path is None else "",
            "gguf_file": rf.spec.gguf_file,
            "weights_sha256": weights_sha256(local),
        }
    cut = save_cut_model(rf.spec, entry["cut_at"], rf.key.dtype, rf.key.pooling, rf.key.max_length, folder)
    return {**entry, "folder": folder.name, "cut": cut}


def save_cut_model(spec: ModelSpec, cut_at: int, dtype: str, pooling: str, max_length: int, folder: Path) -> bool:
    """Save ``spec``'s model cut after layer ``cut_at`` (safetensors; GGUF loads dequantized) and its tokenizer.

    Under a bf16/fp16 policy the Linear weights are stored in that dtype: inference casts them so anyway
    (``extractors.hf.cast_linear_weights``), so it is lossless and halves their bytes. Returns whether it was cut.
    """
    from extractors.hf import HFHiddenStateExtractor, cast_linear_weights
    from extractors.truncate import truncate, weights_dtype

    ext = HFHiddenStateExtractor(spec, "cpu", "fp32", pooling, max_length)
    cut = truncate(ext.model, cut_at, strip_norm=False)  # the norm's weights load; the runtime drops the norm
    quantizer = getattr(ext.model, "hf_quantizer", None)
    if quantizer is not None and spec.gguf_file:
        if getattr(quantizer, "packed_modules", None):
            raise UserError(f"model '{spec.alias}': its GGUF weights stay packed; export it with --weights reference")
        # GGUF loads dequantized into plain weights: save them as an ordinary checkpoint.
        ext.model.hf_quantizer = None
        if hasattr(ext.model.config, "quantization_config"):
            del ext.model.config.quantization_config
    if dtype != "fp32":
        cast_linear_weights(ext.model, weights_dtype(dtype))
    ext.model.save_pretrained(folder, safe_serialization=True)
    ext.tokenizer.save_pretrained(folder)
    return cut


def build_bundle(tcfg: BenchConfig, head_dir: Path, layers: dict[str, str], out: Path, weights: str) -> Path:
    """Write the bundle of a configuration (``layers``: model -> spec) with the head in ``head_dir`` into ``out``."""
    head = json.loads((head_dir / tracking.HEAD_JSON).read_text())
    out.mkdir(parents=True, exist_ok=True)
    members_dir = out / "members"
    members = [
        _member(tcfg, m, spec, members_dir / f"{i}-{Path(m).name}", weights)
        for i, (m, spec) in enumerate(layers.items())
    ]
    for m in members:
        if "folder" in m:
            m["folder"] = f"members/{m['folder']}"
    shutil.copy(head_dir / tracking.HEAD_NET_FILE, out / NET_FILE)
    shutil.copy(head_dir / tracking.HEAD_SCALERS_FILE, out / SCALERS_FILE)
    labels = class_names(tcfg.extract.dataset, head["label_names"])
    meta = {"format": FORMAT_VERSION, "members": members, "net": head["net"], "label_names": labels}
    (out / BUNDLE_FILE).write_text(json.dumps(meta, indent=1))
    return out


def requirements(lexical: bool, gguf: bool) -> list[str]:
    """Pinned pip requirements of loading the model (no lightning, optuna or the feature cache).

    Versions are pinned without a local label (``2.13.0``, not ``2.13.0+cpu``): a local build resolves to nothing,
    or to another build, elsewhere; ``torch_install`` records how to install torch for CPU or CUDA.
    """
    names = [*BASE_REQUIREMENTS, *(["scikit-learn", "scipy"] if lexical else []), *(["gguf"] if gguf else [])]
    out = []
    for name in names:
        try:
            out.append(f"{name}=={md.version(name).split('+')[0]}")
        except md.PackageNotFoundError:
            out.append(name)
    return out


def torch_install() -> dict[str, str]:
    """The build of torch the model was exported with, and the commands that install that version on CPU and CUDA."""
    try:
        build = md.version("torch")
    except md.PackageNotFoundError:
        return {}
    version = build.split("+")[0]
    return {
        "torch_build": build,
        "torch_cpu": f"pip install torch=={version} --index-url {TORCH_INDEX}/cpu",
        "torch_cuda": f"pip install torch=={version} (PyPI's Linux wheel is a CUDA build; for another CUDA version "
        f"use --index-url {TORCH_INDEX}/cu<version>, e.g. cu126)",
    }


def _code_paths(tmp: Path) -> list[str]:
    import benchmark

    repo = Path(benchmark.__file__).resolve().parent.parent
    paths = []
    for pkg in CODE_PACKAGES:
        dst = tmp / "code" / pkg
        shutil.copytree(repo / pkg, dst, ignore=CODE_SKIP)
        paths.append(str(dst))
    return paths


def _model_kwargs(bundle: Path, tmp: Path, example: list[str]) -> dict[str, Any]:
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    # The signature comes from ``TextClassifier.predict``'s ``list[str]`` type hint (MLflow infers it and checks
    # every request against it); the example is a list of texts that MLflow runs through the model when saving.
    return {
        "python_model": TextClassifier(),
        "artifacts": {"bundle": str(bundle)},
        "code_paths": _code_paths(tmp),
        "input_example": example,
        "metadata": torch_install(),
        "pip_requirements": requirements(
            any(m["kind"] == LEXICAL for m in meta["members"]), any(m.get("gguf_file") for m in meta["members"])
        ),
    }


def check_export_args(name: str | None, alias: str, out: Path | None) -> None:
    """Refuse a bad registry name, alias or ``--out`` before any work (MLflow's own validators judge the names).

    Raises:
        UserError: naming the value and the fix.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
        _validate_model_name,
    )

    if name is not None:
        try:
            _validate_model_name(name)
        except MlflowException as err:
            raise UserError(f"--name {name!r}: {err.message} Use letters, digits, '-', '_' or '.'") from None
        if name != name.strip():
            raise UserError(f"--name {name!r}: leading or trailing spaces; use {name.strip()!r}")
        try:
            _validate_model_alias_name(alias)  # type: ignore[no-untyped-call]
            _validate_model_alias_name_reserved(alias)  # type: ignore[no-untyped-call]
        except MlflowException as err:
            raise UserError(f"--alias {alias!r}: {err.message} E.g. --alias champion") from None
    elif alias != "champion":
        raise UserError(f"--alias {alias!r} is set on a registered version: add --name NAME to register the model")
    if out is not None:
        check_folder_path(out, "--out")
        if out.exists() and any(out.iterdir()):
            raise UserError(f"--out {out} exists and is not empty: name a new folder")


def _check_space(out: Path, needed: int) -> None:
    """Refuse when the disk of ``out`` (its first existing folder) has less than ``needed`` bytes free."""
    existing = next(p for p in (out, *out.resolve().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise UserError(
            f"--out {out}: {free / 2**20:.1f} MB free on its disk, the model needs {needed / 2**20:.1f} MB; "
            "free some space or choose another folder"
        )


def _save_atomically(out: Path, kwargs: dict[str, Any], size: int) -> None:
    """Save the model into ``out`` through a sibling temporary folder renamed into place: complete, or absent."""
    import mlflow

    _check_space(out, int(size * SPACE_MARGIN))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        mlflow.pyfunc.save_model(path=str(tmp), **kwargs)
        if out.exists():
            out.rmdir()  # empty (checked before any work)
        os.replace(tmp, out)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise UserError(
            f"--out {out}: the disk filled while saving the model ({size / 2**20:.0f} MB); nothing was saved or "
            "registered: free some space and rerun"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _log_and_register(
    mlc: MlflowClient, run_id: str, kwargs: dict[str, Any], name: str | None, alias: str
) -> tuple[ModelInfo, str | None]:
    """Log the model under run ``run_id``, then register it as ``name`` with ``alias``; (model info, version)."""
    import mlflow
    from mlflow.models import Model

    # Logged by run id, not in a reopened run: the run keeps its status and end time. MLflow files the logged
    # model under the active experiment, so that is the run's.
    mlflow.set_experiment(experiment_id=mlc.get_run(run_id).info.experiment_id)
    info = Model.log(artifact_path=None, name=tracking.MODEL_ARTIFACT, flavor=mlflow.pyfunc, run_id=run_id, **kwargs)
    if name is None:
        return info, None
    version = str(mlflow.register_model(info.model_uri, name).version)  # only a completely logged model
    mlc.set_registered_model_alias(name, alias, version)
    return info, version


def export_model(
    cfg: BenchConfig,
    study: str,
    trial: int | None = None,
    run_id: str | None = None,
    seed: int = 0,
    name: str | None = None,
    alias: str = "champion",
    out: str | Path | None = None,
    weights: str = "copy",
) -> ExportResult:
    """Export the chosen configuration of ``study`` (see module doc); refits it first when no refit run exists.

    Names, alias and ``out`` are checked before any work; ``out`` is written completely (or not at all) before the
    model is logged, and only a logged model is registered and aliased. The refit run's status and end time stay
    as the refit left them.

    Args:
        cfg: Stores and paths (``study.storage``, ``tracking.uri``, ``paths``).
        study: Study name.
        trial: A trial number instead of the best trial.
        run_id: A trial's MLflow run id instead of the best trial.
        seed: Which refit seed's head (0 = ``train.seed``).
        name: Register the model under this name and point ``alias`` at the new version.
        alias: Registry alias (default ``champion``).
        out: Also save the model to this folder (must not exist or be empty).
        weights: ``copy`` (cut weights inside the model) or ``reference`` (source path/hub id + weights hash).

    Raises:
        UserError: bad study/trial/seed/weights mode, name, alias, an occupied ``out`` folder or too little space
            there, missing caches.
    """
    if weights not in WEIGHTS_MODES:
        raise UserError(f"--weights {weights!r}: use one of {', '.join(WEIGHTS_MODES)}")
    out_dir = Path(out) if out is not None else None
    check_export_args(name, alias, out_dir)
    mlc = tracking.client(cfg.tracking)
    chosen = choose(cfg, mlc, study, trial, run_id)
    if chosen.baseline is not None:
        raise UserError(
            f"trial {chosen.trial} of '{study}' is a TF-IDF baseline classifier, not a head on features: "
            "export a trial of a feature study (layer-sweep, search, ...)"
        )
    if not 0 <= seed < chosen.seeds:
        raise UserError(f"--seed {seed}: the study trains seeds 0..{chosen.seeds - 1}")
    refit = refit_study(cfg, study, trial=chosen.trial, mlc=mlc)
    tcfg = trial_config(cfg, mlc, chosen)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        head_dir = Path(mlc.download_artifacts(refit.run_id, tracking.HEAD_DIR.format(seed=seed), str(tmp)))
        bundle = build_bundle(tcfg, head_dir, refit.layers, (tmp / "bundle"), weights)
        size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        kwargs = _model_kwargs(bundle, tmp, load_text_split(tcfg, "test").texts[:3])
        if out_dir is not None:
            _save_atomically(out_dir, kwargs, size)
        info, version = _log_and_register(mlc, refit.run_id, kwargs, name, alias)
    log.info("exported %s (bundle %.1f MB) under run %s", info.model_uri, size / 2**20, refit.run_id)
    return ExportResult(info.model_uri, refit.run_id, name, version, out_dir, size)
