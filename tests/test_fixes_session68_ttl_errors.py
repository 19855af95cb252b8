"""A bad ttl given to dagnb.Memory, .cache(), a run or a Store is a ConfigError (a
ValueError too), with the message naming the value and the accepted forms; a step's own
ttl stays an InvalidStepError."""

from __future__ import annotations

from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.cache.store import Store
from dagnb.errors import ConfigError, GraphError, InvalidStepError

FORMS = "use seconds or a number with ms, s, m, h, d or w such as '10m' or '1h30m', or 'never'"


def _f(x: int) -> int:
    return x


@pytest.mark.parametrize(("make", "what"), [
    (lambda where: dagnb.Memory(str(where), ttl="a day"), "ttl"),
    (lambda where: dagnb.Memory(str(where)).cache(_f, ttl="a day"), "ttl"),
    (lambda where: Store(where, default_ttl="a day"), "default_ttl"),
    (lambda where: Graph("g", [Step("a", run="true")]).run(
        executor="local", cache_directory=str(where), ttl="a day"), "ttl"),
], ids=["Memory", "cache", "Store", "run"])
def test_a_bad_ttl_of_a_cache_setting_is_a_config_error(tmp_path: Path, make, what) -> None:
    """It was an InvalidStepError (a GraphError), as if a step were wrong."""
    with pytest.raises(ConfigError) as refused:
        make(tmp_path / "cache")
    assert not isinstance(refused.value, GraphError)
    assert isinstance(refused.value, ValueError)
    assert str(refused.value) == f"{what} 'a day' is not a duration; {FORMS}"


def test_a_bad_ttl_of_a_step_stays_an_invalid_step_error() -> None:
    with pytest.raises(InvalidStepError, match=r"^step 'a' ttl 'a day' is not a duration; "):
        Step("a", run="true", ttl="a day")


def test_a_bad_run_timeout_is_a_config_error_not_a_step_s(tmp_path: Path) -> None:
    graph = Graph("g", [Step("a", run="true")])
    with pytest.raises(ConfigError, match=r"^run timeout 'soon' is not a duration; use") as raised:
        graph.run(executor="local", cache_directory=str(tmp_path), timeout="soon")
    assert not isinstance(raised.value, GraphError)
