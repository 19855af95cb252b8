"""A project module's function, class or attribute that holds another object or value
than the text a dask worker (or a container) imports would give it: the step is
refused in one line rather than run with the text's (:mod:`dagnb.fingerprint.imported`).
Without a cluster: the check is made as the step's modules are gathered to be sent."""

from __future__ import annotations

import enum
import importlib
import sys
from pathlib import Path

import pytest

from dagnb.errors import ExecutorError
from dagnb.executors import shipped

TEXT = """\
import enum


class Config:
    lr = 0.1
    runs = 0

    def bump(self):
        type(self).runs += 1


class Color(enum.Enum):
    RED = 1


def clean(x):
    return x + 1


def rate_fn(x):
    return x * getattr(rate_fn, "rate", 1.0)


def tagged(x):
    return x


tagged.tag = "a"


def pipeline(x):
    return clean(x) * 10
"""


@pytest.fixture
def feats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delitem(sys.modules, "qa_feats", raising=False)
    (tmp_path / "qa_feats.py").write_text(TEXT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module("qa_feats")
    assert shipped.project_sources(["qa_feats"])["qa_feats"][1] == TEXT.encode()
    return module


def _refusal() -> str:
    with pytest.raises(ExecutorError) as caught:
        shipped.project_sources(["qa_feats"])
    return str(caught.value)


def better_clean(x):
    return x + 1000


def test_a_module_function_rebound_at_run_time_is_refused_naming_it(feats, monkeypatch):
    monkeypatch.setattr(feats, "clean", better_clean)
    assert _refusal() == (
        f"qa_feats.clean is {__name__}.better_clean here but the function clean in the text "
        "of qa_feats.py sent along (set since its import): put the new code in qa_feats.py "
        "and importlib.reload(qa_feats), or run the step on executor='local'")


@pytest.mark.parametrize(("value", "said"), [
    (lambda x: x, f"qa_feats.pipeline is {__name__}.<lambda> here"),
    (5, "qa_feats.pipeline is a int here"),
])
def test_a_module_function_rebound_to_another_object_is_refused(feats, monkeypatch, value,
                                                                 said):
    monkeypatch.setattr(feats, "pipeline", value)
    assert _refusal().startswith(said)


def test_a_module_class_rebound_at_run_time_is_refused(feats, monkeypatch):
    class Config:
        lr = 0.1

    monkeypatch.setattr(feats, "Config", Config)
    assert "qa_feats.Config is " in _refusal()
    assert "but the class Config in the text" in _refusal()


def test_a_class_attribute_set_at_run_time_is_refused_as_a_constant_is(feats, monkeypatch):
    monkeypatch.setattr(feats.Config, "lr", 0.5)
    assert _refusal().startswith("qa_feats.Config.lr is 0.5 here but 0.1 in the text of "
                                 "qa_feats.py sent along")


@pytest.mark.parametrize(("attribute", "value", "said"), [
    ("rate", 0.7, "qa_feats.rate_fn.rate is 0.7 here but not set in the text"),
    ("tag", "bb", "qa_feats.tagged.tag is a str of 2 characters here but a str of 1"),
])
def test_a_function_attribute_unlike_its_text_is_refused(feats, attribute, value, said):
    function = feats.rate_fn if attribute == "rate" else feats.tagged
    setattr(function, attribute, value)
    assert _refusal().startswith(said)


def test_what_the_text_s_own_code_changes_as_it_runs_is_not_refused(feats):
    """A class attribute the module's code sets and an Enum's members hold other values
    than the text's literals, as the worker's import and run make them too."""
    feats.Config().bump()
    assert isinstance(feats.Color.RED, enum.Enum)
    assert shipped.project_sources(["qa_feats"])["qa_feats"][1] == TEXT.encode()


FAST_IMPL = """\
__all__ = ["clean"]


def clean(x):
    return x + 1


class Fields:
    def __init_subclass__(cls):
        for name, value in list(vars(cls).items()):
            if isinstance(value, int):
                setattr(cls, name, property(lambda self, value=value: value))
"""

SELF_SETTING_TEXTS = {
    "namedtuple_defaults": """\
from typing import NamedTuple


class Window(NamedTuple):
    size: int = 10
    step: int = 1
""",
    "dataclass_defaults": """\
import dataclasses


@dataclasses.dataclass
class Window:
    size: int = 10
    name: str = "w"
""",
    "enum": """\
import enum


class Color(enum.Enum):
    RED = 1
    GREEN = "g"
""",
    "base_makes_descriptors": """\
from qa_fastimpl import Fields


class Window(Fields):
    size = 10
""",
    "conditional_class_attribute": """\
import os


class Settings:
    workers = 1
    if os.cpu_count() or 0:
        workers = 4
    retries = 1
    retries = 2
""",
    "star_import_fallback": """\
def clean(x):
    return x + 1


try:
    from qa_fastimpl import *
except ImportError:
    pass
""",
    "update_wrapper": """\
import functools


def _impl(x):
    return x


def api(x):
    return _impl(x)


functools.update_wrapper(api, _impl)
""",
    "globals_update": """\
FACTOR = 10


def clean(x):
    return x


globals().update(clean=lambda x: x * 2, FACTOR=20)
""",
}


@pytest.mark.parametrize("case", sorted(SELF_SETTING_TEXTS))
def test_what_a_text_sets_of_its_own_names_at_import_is_not_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str):
    """A worker importing the text sets them alike: a NamedTuple's defaults become field
    getters (a base's ``__init_subclass__`` properties), a class body binds an attribute
    twice, a star import replaces a fallback, ``update_wrapper`` renames a function,
    ``globals()`` rebinds names."""
    name, text = f"qa_self_{case}", SELF_SETTING_TEXTS[case]
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delitem(sys.modules, "qa_fastimpl", raising=False)
    (tmp_path / "qa_fastimpl.py").write_text(FAST_IMPL)
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    importlib.import_module(name)
    assert shipped.project_sources([name])[name][1] == text.encode()


def test_a_def_after_a_star_import_rebound_at_run_time_is_still_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    text = "from qa_fastimpl import *\n\n\ndef clean(x):\n    return x + 2\n"
    for name in ("qa_after_star", "qa_fastimpl"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "qa_fastimpl.py").write_text(FAST_IMPL)
    (tmp_path / "qa_after_star.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module("qa_after_star")
    assert shipped.project_sources(["qa_after_star"])["qa_after_star"][1] == text.encode()
    monkeypatch.setattr(module, "clean", better_clean)
    with pytest.raises(ExecutorError, match=r"^qa_after_star\.clean is .*better_clean here"):
        shipped.project_sources(["qa_after_star"])
