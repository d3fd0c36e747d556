"""Settings declared once: each field of a config dataclass carries its help, its flag and its rules.

A config dataclass (``TrainConfig``, ``CompareConfig``, the analysis configs) declares every setting as one
:func:`setting` line. Everything else is derived from those lines: the command-line flags (type, choices,
the default shown in ``--help``), the values read from config files (JSON, YAML or TOML) and from a run's
``config.json`` (checked against the field's type, unknown keys named with the closest valid one), and what
``--resume`` may change. Adding a setting is one line in its dataclass plus its use.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from reslab.errors import ConfigError
from reslab.files import MAX_JSON_BYTES, read_text_bounded

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_D = TypeVar("_D", bound="DataclassInstance")

Resume = Literal["frozen", "inherit", "session"]
CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".toml")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    factory: Any = None,
    flag: str | None = None,
    metavar: str | None = None,
    resume: Resume = "inherit",
    sweep: bool = True,
    cli: bool = True,
) -> Any:
    """A dataclass field with its documentation and its rules.

    Args:
        default: the value when not given (``factory`` instead for a mutable default).
        help: one line for ``--help``; the default is appended there automatically.
        flag: the command-line flag, when not ``--<name with dashes>``.
        resume: what ``--resume`` does with it. ``frozen``: what the network learns from (model, data,
            batch, seed) stays as the run was; ``inherit``: taken from the run unless given, and a change is
            announced; ``session``: where and how visibly this call runs (never taken from the run).
        sweep: False for a setting that does not change what a run learns (device, threads, display); a
            sweep ignores it when it decides whether a finished run can be reused.
        cli: False keeps it off the command line (Python only).
    """
    meta = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "resume": resume,
        "sweep": sweep,
        "cli": cli,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of a config dataclass (cached: called for every value checked)."""
    return typing.get_type_hints(cls)


def fields_of(cls: type) -> Iterator[dataclasses.Field[Any]]:
    """The fields of ``cls`` that are settings (declared with :func:`setting`)."""
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            yield f


def field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def flag_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, ``(T, False)`` otherwise."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return tp, False


def choices_of(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` type (optional or not), else None."""
    inner, _ = unwrap_optional(tp)
    return typing.get_args(inner) if typing.get_origin(inner) is Literal else None


# Names other tools use for the same settings: a config file written for them gets the right hint.
ALIASES = {
    "learning_rate": "lr",
    "wd": "weight_decay",
    "bs": "batch_size",
    "arch": "model",
    "network": "model",
    "num_epochs": "epochs",
    "max_iter": "iterations",
    "steps": "iterations",
    "lr_schedule": "schedule",
    "amp": "precision",
    "output_dir": "out",
}


def closest(name: str, valid: list[str]) -> str:
    """``"; did you mean X?"``: the known alias, or the most similar valid name."""
    alias = ALIASES.get(name.lower().replace("-", "_"))
    if alias in valid:
        return f"; did you mean {alias!r}?"
    near = difflib.get_close_matches(name, valid, n=1, cutoff=0.0)
    return f"; did you mean {near[0]!r}?" if near else ""


def check_value(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """``value`` checked against the type of field ``name`` of ``cls`` (lists become tuples, ints floats).

    Raises ConfigError naming ``where`` (a file) and the key, e.g. "config.json: lr must be a number, got
    '0.1'", or, without ``where``, the setting's flag: "--lr must be a number, got '0.1'".
    """
    tp, optional = unwrap_optional(type_hints(cls)[name])
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    subject = f"{where}: {name}" if where else flag_of(field)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{subject} must not be null")
    ok, out, what = _coerce(tp, value)
    if not ok:
        raise ConfigError(f"{subject} must be {what}, got {value!r}")
    return out


def _coerce(tp: Any, value: Any) -> tuple[bool, Any, str]:
    """(value fits, the value as the field holds it, what was expected)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value, "anything"
    if origin is Literal:
        return value in args and not isinstance(value, bool), value, "one of " + ", ".join(map(str, args))
    if tp is bool:
        return isinstance(value, bool), value, "true or false"
    if tp is int:
        whole = isinstance(value, int) and not isinstance(value, bool)
        what = "in [-(2**63 - 1), 2**63 - 1]" if whole else "an integer"
        return whole and abs(value) <= MAX_INT, value, what
    if tp is float:
        # finite and of a sane size: arithmetic on a setting (x 2**30 for bytes) must not
        # overflow to inf or raise OverflowError far from the flag that caused it
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number and abs(value) <= MAX_FLOAT and math.isfinite(value)
        what = f"a number (finite, within ±{MAX_FLOAT:g})" if number else "a number"
        return ok, float(value) if ok else value, what
    if tp is str:
        return isinstance(value, str), value, "a string"
    if origin is tuple:
        item = args[0]
        if not isinstance(value, list | tuple):
            return False, value, f"a list of {_name(item)}"
        items = [_coerce(item, v) for v in value]
        return all(ok for ok, _, _ in items), tuple(v for _, v, _ in items), f"a list of {_name(item)}"
    if origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        return ok, dict(value) if ok else value, "a mapping of names to values"
    raise TypeError(f"unsupported setting type {tp!r}")  # a programming error, caught by the tests


MAX_INT = 2**63 - 1  # every count and seed fits in int64
MAX_FLOAT = 1e100  # far beyond any setting (a diverging lr of 1e30 included); 1e300 x 2**30 would be inf


def range_text(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> str:
    """An interval as it is checked: ``(0, inf)`` when there is no upper bound (infinity is never a value)."""
    lo = ("(" if low_open or math.isinf(low) else "[") + f"{low:g}"
    hi = f"{high:g}" + (")" if high_open or math.isinf(high) else "]")
    return f"{lo}, {hi}"


def check_range(
    flag: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """One-line ConfigError unless ``value`` is finite and in the interval, printed as it is checked."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        interval = range_text(low, high, low_open=low_open, high_open=high_open)
        raise ConfigError(f"{flag} must be in {interval}, got {value}")


def _name(tp: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings"}.get(tp, str(tp))


def from_mapping(cls: type, data: Mapping[str, Any], *, where: str, strict: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from a mapping read from a file, every value checked.

    ``strict``: an unknown key is an error naming it and the closest valid key (a user's config file);
    otherwise it is ignored (a run directory written by a newer reslab).
    """
    valid = [f.name for f in fields_of(cls)]
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in valid:
            if strict:
                raise ConfigError(f"{where}: unknown key {key!r}{closest(str(key), valid)}")
            continue
        out[key] = check_value(cls, key, value, where)
    return out


def check_fields(cfg: _D, where: str) -> _D:
    """``cfg`` with every setting checked against its declared type (lists become tuples, ints floats):
    a wrong type from Python (``depths="8"``, ``epochs="3"``) is one line naming ``where`` and the setting,
    never a string split into characters or an internal exception later."""
    cls = type(cfg)
    values = {f.name: check_value(cls, f.name, getattr(cfg, f.name), where) for f in fields_of(cls)}
    return dataclasses.replace(cfg, **values)


def api_config(cls: type[_D], cfg: object, settings: Mapping[str, Any], where: str) -> _D:
    """The config a Python API function was handed, checked at the edge: ``cfg`` (a ``cls`` or None) with
    ``settings`` (its keyword arguments) on top, every type checked (:func:`check_fields`).

    Raises:
        ConfigError: ``cfg`` is not a ``cls``, a keyword is no setting of it (with the closest one), a
            required setting is missing, or a value has the wrong type; one line naming ``where``.
    """
    if cfg is not None and not isinstance(cfg, cls):
        raise ConfigError(
            f"{where} takes a {cls.__name__} or its settings as keyword arguments, got {type(cfg).__name__}"
        )
    if "cfg" in settings:
        raise ConfigError(f"{where} takes its {cls.__name__} as the first argument, not as cfg=...")
    valid = [f.name for f in fields_of(cls)]
    for key in settings:
        if key not in valid:
            raise ConfigError(f"{where}: unknown setting {key!r}{closest(str(key), valid)}")
    try:
        made = dataclasses.replace(cfg, **settings) if cfg is not None else cls(**settings)
    except TypeError as err:  # a required setting missing
        raise ConfigError(f"{where}: {err}".replace("__init__()", cls.__name__)) from None
    return check_fields(made, where)


def require_config(cfg: Any, cls: type, where: str) -> None:
    """One-line ConfigError unless ``cfg`` is a ``cls`` (or the class itself): ``train("resnet8")`` or a
    dict in place of the config is named at the edge, not met as an AttributeError deep inside."""
    if not (isinstance(cfg, cls) or cfg is cls):
        raise ConfigError(
            f"{where} takes a {cls.__name__}, got {type(cfg).__name__}; e.g. {where.rstrip('()')}"
            f"({cls.__name__}(...))"
        )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A mapping from a JSON, YAML or TOML file (by suffix); one-line ConfigError for anything else.

    A run's ``config.json`` (settings under ``"config"`` beside data facts and versions) gives its settings.
    """
    path = Path(path).expanduser()
    text = read_text_bounded(path, MAX_JSON_BYTES, "config file", error=ConfigError)
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = load_yaml(text, f"--config {path}")
        elif suffix == ".toml":
            data = _toml().loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"--config {path}: unknown format; use one of {', '.join(CONFIG_SUFFIXES)}")
    except ConfigError:
        raise
    except Exception as err:  # yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--config {path} is not valid {suffix[1:].upper()}: {first}") from None
    check_structure(data, f"--config {path}")  # sized before anything expands or copies it
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "data" in data:
        data = dict(data["config"])  # a run's config.json
        data.pop("out", None)  # a new run of the same settings: not into the old run's directory
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of setting names to values")
    return data


# A settings file is a few dozen keys. These bounds turn a "billion laughs" YAML (aliases of aliases: a few
# hundred bytes that expand to 10^9 items in whatever walks them: json.dumps, deepcopy, a hash) and a
# 16 MiB array into one line at once, instead of minutes of work and a MemoryError.
MAX_ALIASES = 100  # YAML aliases (*name) in one document
MAX_ITEMS = 100_000  # values and containers, counted as expanded (an alias counts its whole target again)
MAX_DEPTH = 32  # nested lists and mappings


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` that refuses more than :data:`MAX_ALIASES` aliases while it composes (one-line
    ConfigError naming ``where``); the result is then sized by :func:`check_structure`."""
    import yaml

    class _BoundedLoader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise ConfigError(
                        f"{where}: more than {MAX_ALIASES} YAML aliases; a settings file needs none of "
                        "that size: write the values out"
                    )
            return super().compose_node(parent, index)

    loader = _BoundedLoader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    check_structure(data, where)
    return data


def check_structure(data: Any, where: str) -> None:
    """Refuse a value deeper than :data:`MAX_DEPTH` or with more than :data:`MAX_ITEMS` items as expanded.

    Counts without expanding: a walk that stops at the first bound, so a structure that shares one list a
    billion times over is refused after :data:`MAX_ITEMS` steps, not built.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 1  # values met so far, walked or waiting on the stack
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise ConfigError(f"{where} nests deeper than {MAX_DEPTH} levels; a settings file is flat")
            seen += len(value)
            if seen > MAX_ITEMS:  # checked before the children are pushed: never a huge stack
                raise ConfigError(
                    f"{where} holds more than {MAX_ITEMS:,} values; a settings file is far smaller"
                )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli
