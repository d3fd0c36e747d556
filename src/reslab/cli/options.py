"""Flags from settings: each field of a config dataclass becomes one flag, with its type, choices and default.

Nothing here names a setting: adding a field to ``TrainConfig`` (or a study's config) adds its flag to
every command that trains (``train``, ``compare``), with the help and default the field declares. Also
here: ``--config FILE`` (JSON, YAML or TOML; flags win over the file) and ``--print-config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from collections.abc import Sequence
from typing import Any

from reslab.errors import ConfigError
from reslab.settings import (
    choices_of,
    field_default,
    fields_of,
    flag_of,
    from_mapping,
    read_config_file,
    type_hints,
    unwrap_optional,
)

DefaultText = typing.Callable[[dataclasses.Field[Any]], str]


def add_config_flags(p: argparse.ArgumentParser, *, what: str = "settings") -> None:
    """``--config FILE`` and ``--print-config``, the same on every command that takes a config."""
    p.add_argument(
        "--config", metavar="FILE", help=f"read {what} from a JSON, YAML or TOML file; flags win over it"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")


def add_setting_flags(
    p: argparse.ArgumentParser | Any,
    cls: type,
    *,
    skip: Sequence[str] = (),
    default_text: DefaultText | None = None,
) -> None:
    """One flag per setting of ``cls`` (fields declared with :func:`reslab.settings.setting`).

    Flags default to None, so that :func:`given` can tell what the user typed; the help shows the real
    default (``default_text(field)`` when given, else the field's own).
    """
    hints = type_hints(cls)
    for f in fields_of(cls):
        if not f.metadata["cli"] or f.name in skip:
            continue
        tp, _ = unwrap_optional(hints[f.name])
        default = default_text(f) if default_text else _show(field_default(f))
        text = f.metadata["help"].replace("%", "%%")
        shown = default.replace("%", "%%")
        kwargs: dict[str, Any] = {"help": f"{text} (default: {shown})" if default else text}
        flag = flag_of(f)
        if not flag.startswith("-"):  # positional: values, commas allowed; none if the setting has a default
            metavar = f.metadata.get("metavar") or re.sub(
                "(IE)?S$", lambda m: "Y" if m[1] else "", f.name.upper()
            )
            optional = field_default(f) is not dataclasses.MISSING
            p.add_argument(f.name, nargs="*" if optional else "+", metavar=metavar, **kwargs)
            continue
        kwargs.update(
            dest=f.name,
            default=None,
            required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        p.add_argument(flag, **kwargs, **_kind(tp, f))


def _kind(tp: Any, f: dataclasses.Field[Any]) -> dict[str, Any]:
    """argparse's type / action / choices / metavar for a setting of type ``tp``."""
    metavar = f.metadata.get("metavar")
    choices = choices_of(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if choices is not None:
        return {"choices": choices}
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return {"type": _comma_list(item), "metavar": metavar or "V,V"}
    if origin is dict:
        return {"nargs": "+", "action": _KeyValues, "metavar": metavar or "KEY=VALUE"}
    return {"type": tp, "metavar": metavar or f.name.upper()}


def _show(value: Any) -> str:
    if value is None or value is dataclasses.MISSING:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def _comma_list(item: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {item.__name__}, got {text!r}"
            ) from None

    parse.__name__ = f"list of {item.__name__}"
    return parse


class _KeyValues(argparse.Action):
    """``KEY=VALUE ...`` into a dict; values are read as YAML scalars (true, 3, 0.5, null, B)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        import yaml

        from reslab.settings import load_yaml

        out = dict(getattr(namespace, self.dest) or {})
        for item in values:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                parser.error(f"{option_string} expects KEY=VALUE pairs, got {item!r}")
            try:  # bounded: an alias bomb in one value is one line, never expanded
                out[key.strip()] = load_yaml(raw, f"{option_string} {key.strip()}") if raw.strip() else ""
            except yaml.YAMLError:
                out[key.strip()] = raw
            except ConfigError as err:
                parser.error(str(err))
        setattr(namespace, self.dest, out)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` that were typed on the command line (positional lists split at commas)."""
    out = {}
    for f in fields_of(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if not flag_of(f).startswith("-"):
            value = tuple(part.strip() for v in value for part in v.split(",") if part.strip())
            if not value:  # none given: the setting's default (or a config file's value) stands
                continue
        out[f.name] = value
    return out


def from_file(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` in ``--config FILE`` (checked: unknown keys name the closest valid one)."""
    if not getattr(args, "config", None):
        return {}
    return from_mapping(cls, read_config_file(args.config), where=args.config)


def as_json(cfg: Any) -> str:
    """A config's settings as indented JSON, in the form ``--config`` reads back."""
    data = {f.name: getattr(cfg, f.name) for f in fields_of(type(cfg))}
    return json.dumps(data, indent=2, default=list)


def build(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)`` with a Python TypeError (a missing setting) as a one-line ConfigError."""
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{err}".replace("__init__()", cls.__name__)) from None
