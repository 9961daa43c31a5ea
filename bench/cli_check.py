"""Explain an unknown config key before Hydra rejects it, listing the keys that do exist.

Hydra's own message for `method.rr=8` says only "Key 'rr' is not in struct". This check composes
the config with the command line's group choices and, for each `a.b.c=value` override whose key
does not exist, names the valid keys at that level.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

CONF = Path(__file__).resolve().parent.parent / "conf"


def _parse(args: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a syntax error: Hydra reports it better
        return None


def _first_value(o) -> str:
    if o.is_sweep_override():
        return next(iter(o.sweep_string_iterator()))
    return o.get_value_element_as_str()


def unknown_key_message(args: list[str]) -> str | None:
    parsed = _parse(args)
    if not parsed:
        return None
    keys = [
        o
        for o in parsed
        if "." in o.key_or_group
        and not o.is_add()
        and not o.is_force_add()
        and not o.is_delete()
        and not o.key_or_group.startswith("hydra.")
    ]
    if not keys:
        return None
    groups = [
        f"{o.key_or_group}={_first_value(o)}"
        for o in parsed
        if "." not in o.key_or_group and o.package is None and not o.is_delete()
    ]
    from hydra import compose, initialize_config_dir

    from bench.config import register_configs

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=groups)
    except Exception:  # e.g. an unknown group option: Hydra's own message lists the choices
        return None
    problems = []
    for o in keys:
        parts = o.key_or_group.split(".")
        node, depth = cfg, 0
        while depth < len(parts) and isinstance(node, DictConfig) and parts[depth] in node:
            node, depth = node[parts[depth]], depth + 1
        if depth == len(parts) or not isinstance(node, DictConfig):
            continue
        where = ".".join(parts[:depth]) or "the top level"
        valid = ", ".join(sorted(str(k) for k in node.keys()))
        problems.append(
            f"unknown config key '{o.key_or_group}': '{parts[depth]}' is not a key of {where}; "
            f"valid keys there: {valid}"
        )
    if not problems:
        return None
    return "error: " + "\n       ".join(problems) + "\n(to add a key on purpose, prefix it with +)"
