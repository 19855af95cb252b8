"""The ``dagnb templates`` and ``dagnb config`` subcommands.

::

    dagnb templates list [--category ml]
    dagnb templates show ID
    dagnb templates new ID --param rows=1000 --param title="Q3 sales" -o workflows/q3.yml
    dagnb config show            # every setting, its value and where it came from
    dagnb config path            # the config file in force, if any

Importing this module registers them with :mod:`dagnb.cli`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import config, templates
from .cli import _EXTENSIONS, command
from .errors import ConfigError

__all__ = ["add_subcommands"]


def add_subcommands(sub: Any) -> None:
    """Add ``templates`` and ``config`` to the ``dagnb`` parser's subparsers."""
    tpl = sub.add_parser("templates", help="list pipeline templates and start workflows from them")
    actions = tpl.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the templates as a table")
    listing.add_argument("--category", default=None, help="only this category")
    show = actions.add_parser("show", help="a template's description and parameters")
    show.add_argument("id")
    new = actions.add_parser("new", help="write a workflow file from a template")
    new.add_argument("id")
    new.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                     help="a template parameter (repeatable); lists as a,b or [1, 2]")
    new.add_argument("-o", "--output", default=None,
                     help="workflow file to write (default <workflow_directory>/<id>.yml)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    cfg = sub.add_parser("config", help="show the effective settings and their sources")
    cfg_actions = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    cfg_actions.add_parser("show", help="every setting with its value and source")
    cfg_actions.add_parser("path", help="the config file in force")


@command("templates")
def _templates(args: argparse.Namespace) -> int:
    return {"list": _list, "show": _show, "new": _new}[args.action](args)


def _list(args: argparse.Namespace) -> int:
    frame = templates.table(args.category)
    print(frame[["id", "category", "name"]].to_string(index=False) if len(frame) else
          "no templates found")
    return 0


def _show(args: argparse.Namespace) -> int:
    template = templates.get(args.id)
    print(f"{template.id}: {template.name} [{template.category}]")
    print(template.description)
    print("parameters:")
    for parameter in template.parameters.values():
        print(f"  {templates._signature(parameter)}  {parameter.description}")
    graph = template.instantiate(**{
        name: _placeholder(p) for name, p in template.parameters.items() if p.required
    })
    print("steps: " + ", ".join(graph.order()))
    return 0


_SAMPLES = {"str": "x", "int": 1, "float": 1.0, "bool": False, None: "x"}


def _placeholder(parameter: templates.Parameter) -> Any:
    """A value of the parameter's type (lists: one item of the item type)."""
    if parameter.type == "list":
        return [_SAMPLES[parameter.items]]
    return _SAMPLES[parameter.type]


def _new(args: argparse.Namespace) -> int:
    template = templates.get(args.id)
    values = template.values(_pairs(args.param), from_text=True)
    output = Path(args.output or Path(config.settings().workflow_directory) / f"{args.id}.yml")
    if output.exists() and not args.force:
        raise ConfigError(f"{str(output)!r} already exists; pass --force to overwrite it")
    output.parent.mkdir(parents=True, exist_ok=True)
    template.to_yaml(output, **values)
    print(f"wrote {output} from template {template.id!r}; run it with: dagnb run {output}")
    return 0


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param {item!r} is not NAME=VALUE; write it like rows=100")
        pairs[name.strip()] = value
    return pairs


@command("config")
def _config(args: argparse.Namespace) -> int:
    if args.action == "path":
        path = config.find_config_file()
        print(path if path is not None else "no config file (built-in defaults and DAGNB_* only)")
        return 0
    config.reload()  # what a fresh process sees: the file and the environment as they are now
    frame = config.show()
    frame["value"] = frame["value"].map(repr)
    print(frame.to_string(index=False))
    return 0


_EXTENSIONS.append(add_subcommands)
