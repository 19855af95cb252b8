"""The YAML reading a workflow file, its ``--param`` values and a template's parameters
share: a key given twice refused, YAML 1.2's exponent floats read as numbers. (Apart from
:mod:`dagnb.workflows.loader`, so that the parameters it reads need not import it.)"""

from __future__ import annotations

import re
from typing import Any

from dagnb.config.yaml_keys import UniqueKeyLoader

__all__ = ["EXPONENT_FLOAT", "WorkflowLoader", "reading_yaml_1_2_floats"]


class _StrictLoader(UniqueKeyLoader):
    """Refuses a key given twice in one mapping (two steps of one name would otherwise
    silently become the last one); merge keys work. Reads YAML 1.2's floats."""


# YAML 1.2 (and JSON, Python, a notebook's --param) reads 1e-3, 1e6 and 2.5E3 as numbers;
# PyYAML reads YAML 1.1, whose floats need a dot and a signed exponent, so there they were
# text ("1e-3" * 18 repeated the text). Only these exponent forms are added: every other
# scalar reads as before.
_FLOAT_TAG = "tag:yaml.org,2002:float"
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$")


def reading_yaml_1_2_floats(cls: type[Any]) -> type[Any]:
    """``cls`` (a loader, or a dumper: it then quotes the text "1e-3") resolving
    exponent floats as YAML 1.2 does."""
    cls.add_implicit_resolver(_FLOAT_TAG, EXPONENT_FLOAT, list("-+.0123456789"))
    return cls


reading_yaml_1_2_floats(_StrictLoader)
WorkflowLoader = _StrictLoader  # (a --param value is read as the file reads it)
