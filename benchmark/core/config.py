"""The single typed, frozen configuration: dataclass defaults < environment < YAML file (``-c``) < ``--set a.b=v``.

This is the only module that reads environment variables. Relative paths are relative to the
working directory (the README runs everything from the repository root).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core.config_sections import (
    ConfigError,
    DataConfig,
    ExtractConfig,
    PathsConfig,
    PipelineConfig,
    ReportConfig,
    SelectionConfig,
    StudyConfig,
    TrackingConfig,
    TrainConfig,
)
from benchmark.core.registry import suggest

# Environment variable -> dotted config key. Applied after defaults, before the YAML file.
ENV_KEYS = {
    "LAYERFUSE_DATA_DIR": "paths.data_dir",
    "LAYERFUSE_MODELS_DIR": "paths.models_dir",
    "LAYERFUSE_CACHE_DIR": "paths.cache_dir",
    "MLFLOW_TRACKING_URI": "tracking.uri",
    "LAYERFUSE_ARTIFACT_ROOT": "tracking.artifact_root",
}


# What a whole-number key allows, added to the message when its value is not one.
WHOLE_NUMBER_HINTS = {
    "data.cv_folds": (
        ": use 0 (one validation split) or k >= 2 folds, at most the smallest class's training count (see "
        "data.cv_small_classes)"
    ),
}


def torchrun_env(env: typing.Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` set by ``torchrun`` for each process it starts; ``(0, 1, 0)`` without it."""
    env = os.environ if env is None else env
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything layerfuse needs, in one frozen object."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Coerce a YAML or ``--set`` value to the field's declared type, or raise naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_optional(key, value, typing.get_args(tp))
    if origin is tuple:
        return _coerce_tuple(key, value, typing.get_args(tp)[0])
    if tp is bool:
        return _coerce_bool(key, value)
    if tp in (int, float):
        return _coerce_number(key, value, tp)
    if tp is str:
        return str(value)
    return value


def _coerce_optional(key: str, value: Any, args: tuple[Any, ...]) -> Any:
    """``X | None``: ``None``, ``none`` or ``null`` where None is allowed, else the first non-None type."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if type(None) in args:
            return None
    inner = [a for a in args if a is not type(None)]
    return _coerce(key, value, inner[0])


def _coerce_tuple(key: str, value: Any, item_type: Any) -> tuple[Any, ...]:
    """``tuple[X, ...]`` from a list, a comma-separated string, or a single value."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif not isinstance(value, list | tuple):
        value = [value]
    return tuple(_coerce(key, v, item_type) for v in value)


def _coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise ConfigError(f"{key}={value!r} is not a boolean: use true or false")


def _coerce_number(key: str, value: Any, tp: type[int] | type[float]) -> int | float:
    """An int or float; a bool is refused, and so is a fractional float for an int key."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not a number")
    try:
        out = tp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a valid {tp.__name__}{WHOLE_NUMBER_HINTS.get(key, '')}") from None
    if tp is int and isinstance(value, float) and value != out:
        raise ConfigError(f"{key}={value!r} is not a whole number{WHOLE_NUMBER_HINTS.get(key, '')}")
    return out


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(cfg: BenchConfig, key: str, raw: Any, source: str) -> BenchConfig:
    """Return ``cfg`` with dotted ``key`` set to ``raw`` (coerced), validating the key."""
    sections = {f.name: f for f in dataclasses.fields(BenchConfig)}
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in sections:
        raise ConfigError(
            f"unknown config key '{key}' ({source}).{suggest(parts[0], list(sections))} Keys look like "
            f"section.field; sections: {', '.join(sections)}"
        )
    section_name, field_name = parts
    section = getattr(cfg, section_name)
    hints = _section_types(type(section))
    if field_name not in hints:
        full = [f"{section_name}.{n}" for n in hints]
        raise ConfigError(
            f"unknown config key '{key}' ({source}).{suggest(key, full)} Valid keys in '{section_name}': "
            f"{', '.join(hints)}"
        )
    value = _coerce(key, raw, hints[field_name])
    try:
        new_section = dataclasses.replace(section, **{field_name: value})
    except ConfigError as err:
        raise ConfigError(f"{err} ({source})") from None
    return dataclasses.replace(cfg, **{section_name: new_section})


def _flatten(tree: dict[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for sec, body in tree.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: '{sec}' must be a mapping of field: value (got {type(body).__name__})")
        for k, v in body.items():
            flat[f"{sec}.{k}"] = v
    return flat


def _parse_literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    **sets: Any,
) -> BenchConfig:
    """Build the config: defaults < env < YAML ``path`` < ``overrides`` (``a.b=v``) < ``sets`` (``{"a.b": v}``).

    Args:
        path: Optional YAML file with ``section: {field: value}`` mappings.
        overrides: ``--set`` strings, parsed with ``literal_eval`` then coerced to the field type.
        env: Environment to read (default ``os.environ``).
        sets: Typed values from CLI flags, keyed by dotted name (``**{"extract.limit": 5}``).

    Raises:
        ConfigError: unknown key (with a suggestion), bad value, unreadable YAML.
    """
    cfg = BenchConfig()
    environ = os.environ if env is None else env
    for var, key in ENV_KEYS.items():
        if environ.get(var):
            cfg = _apply(cfg, key, environ[var], f"environment {var}")
    if path is not None:
        p = Path(path)
        for key, value in _flatten(_read_yaml(p), str(p)).items():
            cfg = _apply(cfg, key, value, f"file {p}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.field=value, e.g. --set train.lr=3e-4")
        key, _, text = item.partition("=")
        cfg = _apply(cfg, key.strip(), _parse_literal(text.strip()), f"--set {item}")
    for key, value in sets.items():
        cfg = _apply(cfg, key, value, f"option for {key}")
    return cfg


def _read_yaml(p: Path) -> dict[str, Any]:
    """The ``section: {field: value}`` mapping of config file ``p``, or a ConfigError naming the file and the fix."""
    import yaml

    if not p.is_file():
        raise ConfigError(f"config file {p} not found: check the -c/--config path")
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {p} is not UTF-8 (byte offset {err.start:,}): save it as UTF-8") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(tree).__name__}")
    return tree


def with_values(cfg: BenchConfig, values: dict[str, Any]) -> BenchConfig:
    """Return a copy of ``cfg`` with dotted keys replaced (used for per-trial configs)."""
    for key, value in values.items():
        cfg = _apply(cfg, key, value, "derived")
    return cfg


def to_dict(cfg: BenchConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON output."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return {
        sec: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, sec)).items()}
        for sec in (f.name for f in dataclasses.fields(cfg))
    }


def to_yaml(cfg: BenchConfig) -> str:
    """The resolved config as YAML (saved with every MLflow run)."""
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
