"""Explain two command-line mistakes before Hydra rejects them, with what is valid.

- An unknown config key: Hydra's own message for `method.rr=8` says only "Key 'rr' is not in
  struct". This check composes the config with the command line's group choices and, for each
  `a.b.c=value` override whose key does not exist, names the valid keys at that level.
- A model file that names no size class, on a command line that sets none: Hydra's message lists
  the classes but not how a file names one.
"""

from __future__ import annotations

from omegaconf import DictConfig

from bench.config import compose_config, group_option, group_options


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
    try:
        cfg = compose_config(groups)
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


def file_size_class(model: str) -> str | None:
    """The size class model file `model` names in its defaults list (`override
    /size@_global_.size: <class>`; `???` asks for size= on the command line), or None."""
    for entry in group_option("model", model)[1]:
        if getattr(entry, "group", None) and entry.group.lstrip("/") == "size":
            return str(entry.value)
    return None


def size_class_message(args: list[str]) -> str | None:
    if any(a.split("=")[0].lstrip("+") in ("size", "size@_global_.size") for a in args):
        return None
    named = [a.split("=", 1)[1] for a in args if a.split("=")[0] == "model"]
    if len(named) != 1 or "(" in named[0]:  # no model= (the default file, or an experiment's) or a sweep function
        return None
    models = group_options("model")
    for name in named[0].split(","):
        found = file_size_class(name) if name in models else ""
        if found is None or found == "???":
            why = (
                "needs the size class on the command line: size=<class>"
                if found
                else "names no size class: set one on the command line, size=<class>, or in the file: "
                "`defaults: [override /size@_global_.size: <class>, _self_]`"
            )
            return (
                f"error: model={name} (conf/model/{name}.yaml) {why}. The class sets the train/eval sizes "
                f"(batch, length, device, precision; docs/models.md). Classes (conf/size/): "
                f"{', '.join(group_options('size'))}"
            )
    return None
