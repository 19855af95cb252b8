"""A shell step's text may run Perl, Node or Ruby reading host variables: one read by
its literal name is in the key as ``$REGION`` is (``$ENV{REGION}``, ``process.env.REGION``,
``ENV["REGION"]``), and one taking the environment whole (``keys %ENV``,
``JSON.stringify(process.env)``, ``ENV.to_h``), bash's ``compgen -e`` or ``env -u X``
with no command is warned of on a hit, in the tongue it was read in."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

import dagnb
import dagnb.runtime.unmounted as unmounted
from dagnb.cache import step_key
from dagnb.cache.keys import reads_whole_environment
from dagnb.model.step import Step
from dagnb.runtime.unmounted import UnkeyedEnvironmentWarning


@pytest.fixture(autouse=True)
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, empty in (("_PRINTS_ENVIRONMENT", {}), ("_WARNED_ENVIRONMENT", set())):
        monkeypatch.setattr(unmounted, name, empty)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGION", raising=False)


def _host_vars(run: str) -> dict[str, str]:
    key = step_key(Step("r", run=run), upstream_digests={}, base_dir=Path("."))
    return {k: v for k, v in key.describe.items() if k.startswith("host_var:")}


@pytest.mark.parametrize("run", [
    "perl -e 'print $ENV{REGION}'", "perl -e \"print \\$ENV{'REGION'}\"",
    "node -e 'console.log(process.env.REGION)'",
    "node -e 'console.log(process.env[\"REGION\"])'",
    "ruby -e 'puts ENV[\"REGION\"]'", "ruby -e 'puts ENV.fetch(\"REGION\")'",
])
def test_a_variable_read_by_name_in_perl_node_or_ruby_is_in_the_key(
        run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION", "eu")
    assert _host_vars(run) == {"host_var:REGION": "eu"}  # (not Perl's hash, ENV, too)
    monkeypatch.setenv("REGION", "ap")
    assert _host_vars(run) == {"host_var:REGION": "ap"}


@pytest.mark.parametrize(("run", "whole"), [
    ("compgen -e", True), ("for v in $(compgen -e); do echo $v; done", True),
    ("compgen -A export | wc -l", True), ("env -u API_KEY", True),
    ("env --unset=API_KEY | sort", True), ("env -u API_KEY make build", False),
    ("perl -e 'print join(\",\", keys %ENV)'", True),
    ("node -e 'console.log(JSON.stringify(process.env))'", True),
    ("node -e 'console.log({...process.env})'", True),
    ("ruby -e 'p ENV.to_h'", True), ("ruby -e 'ENV.each { |k, v| puts k }'", True),
    ("perl -e 'print $ENV{REGION}'", False), ("node -e 'process.env.REGION'", False),
    ("ruby -e 'puts ENV[\"REGION\"]'", False), ("compgen -c", False),
    ("conda env list", False), ("echo $ENVIRONMENT", False),
])
def test_what_reads_the_whole_environment_in_other_tongues(run: str, whole: bool) -> None:
    assert reads_whole_environment(run) is whole


@pytest.mark.skipif(shutil.which("perl") is None, reason="no perl on this machine")
def test_a_perl_dump_served_from_the_cache_is_warned_of_in_perl_s_words(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = "perl -e 'print join(qq(,), sort keys %ENV)' > \"$DAGNB_OUT/names.txt\""
    (tmp_path / "wf.yml").write_text(f"name: wf\nsteps:\n  show: {{run: {json.dumps(run)}}}\n")
    graph = dagnb.load(tmp_path / "wf.yml")

    def said() -> tuple[dict[str, str], list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            done = graph.run(executor="local")
        return done.states(), [str(w.message) for w in caught
                               if issubclass(w.category, UnkeyedEnvironmentWarning)]

    assert said() == ({"show": "succeeded"}, [])
    monkeypatch.setenv("REGION", "ap")
    assert said() == ({"show": "cached"}, [
        "step 'show' was served from the cache, but it reads its whole environment (%ENV "
        "in Perl it runs), whose variables its key does not hold: the result may be stale; "
        "name each variable it reads ($ENV{REGION}), which then counts in its key, or set "
        "it in the step's env"])
