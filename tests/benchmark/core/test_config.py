"""Config precedence, coercion and errors; registry behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.core.config import load_config, to_yaml, with_values
from benchmark.core.config_sections import ConfigError
from benchmark.core.registry import Registry, UnknownNameError


def test_precedence_defaults_env_yaml_set(tmp_path: Path) -> None:
    assert load_config(env={}).paths.cache_dir == ".cache/features"
    env = {"LAYERFUSE_CACHE_DIR": "/env/cache", "LAYERFUSE_DATA_DIR": "d", "MLFLOW_TRACKING_URI": "sqlite:///x.db"}
    env["LAYERFUSE_ARTIFACT_ROOT"] = "/env/artifacts"  # with the store elsewhere, its artifacts too
    cfg = load_config(env=env)
    assert (cfg.paths.cache_dir, cfg.paths.data_dir, cfg.tracking.uri) == ("/env/cache", "d", "sqlite:///x.db")
    assert cfg.tracking.artifact_root == "/env/artifacts"
    yml = tmp_path / "c.yaml"
    yml.write_text("paths:\n  cache_dir: yaml-cache\ntrain:\n  lr: 0.001\n  hidden_dims: [64, 32]\n")
    cfg = load_config(yml, env=env)
    assert cfg.paths.cache_dir == "yaml-cache" and cfg.train.lr == 0.001 and cfg.train.hidden_dims == (64, 32)
    cfg = load_config(yml, ["paths.cache_dir=cli", "train.hidden_dims=128", "extract.models=a,b"], env=env)
    assert cfg.paths.cache_dir == "cli" and cfg.train.hidden_dims == (128,) and cfg.extract.models == ("a", "b")
    cfg = load_config(yml, ["train.lr=0.5"], env=env, **{"train.lr": 0.25})
    assert cfg.train.lr == 0.25  # explicit flags win over --set


def test_coercion_and_none() -> None:
    cfg = load_config(overrides=["extract.limit=None", "extract.trust_remote_code=yes", "train.max_epochs=3"], env={})
    assert cfg.extract.limit is None and cfg.extract.trust_remote_code is True and cfg.train.max_epochs == 3
    with pytest.raises(ConfigError, match="train.max_epochs='three' is not a valid int"):
        load_config(overrides=["train.max_epochs=three"], env={})
    with pytest.raises(ConfigError, match="is not a boolean"):
        load_config(overrides=["extract.trust_remote_code=maybe"], env={})


def test_unknown_keys_suggest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'train.lr'"):
        load_config(overrides=["train.lrr=1"], env={})
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        load_config(overrides=["trian.lr=1"], env={})
    yml = tmp_path / "bad.yaml"
    yml.write_text("extract: [1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(yml, env={})
    yml.write_text("extract: {a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(yml, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", env={})


def test_frozen_and_replace_roundtrip() -> None:
    cfg = load_config(env={})
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    trial = with_values(cfg, {"train.lr": 0.01})
    assert trial.train.lr == 0.01 and cfg.train.lr == 1e-4
    assert "lr: 0.0001" in to_yaml(cfg)


def test_registry_errors_and_duplicates() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    reg.register("beta", "b")(2)
    assert reg.names() == ["alpha", "b", "beta"] and "b" in reg and len(reg) == 3
    with pytest.raises(ValueError, match="duplicate widget name 'alpha'"):
        reg.add("alpha", 3)
    with pytest.raises(UnknownNameError) as err:
        reg.get("alpah")
    assert str(err.value) == "unknown widget 'alpah'. Did you mean 'alpha'? Valid widgets: alpha, b, beta"
    assert isinstance(err.value, KeyError)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu avx512f avx512_bf16 sse", "bf16"), ("fpu amx_bf16 amx_tile", "bf16"), ("fpu avx2 avx512f", "fp32")],
)
def test_auto_dtype_follows_the_cpu_bf16_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str, expected: str
) -> None:
    from benchmark.core import hardware

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    read_flags = hardware.cpu_has_bf16.__wrapped__  # uncached
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: read_flags(str(cpuinfo)))
    assert hardware.resolve_dtype("auto", "cpu") == expected
    assert hardware.resolve_dtype("fp16", "cpu") == "fp16"  # an explicit dtype is never overridden
    assert not read_flags(str(tmp_path / "missing"))  # no cpuinfo (macOS): fp32
