"""A secret written into a step's ``env`` (``DB_PASSWORD: CorrectHorse42Battery``, a
``DATABASE_URL`` with its password) was printed in clear in the step's logs, kept in
clear in its cache entry's description (and pushed to a store with it), with no word
said; and ``secrets: [X]`` beside ``env: {X: ...}`` dropped the env's value silently,
which the cache still kept. Now such a value is masked in the run, described as
``<not shown>``, warned of, and the name in both is refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import dagnb
from dagnb.errors import InvalidStepError
from dagnb.model.masking import written_secrets

PASSWORD, URL_PASSWORD = "CorrectHorse42Battery", "hunter2hunter2"
WORKFLOW = f"""\
name: wf
steps:
  a:
    env:
      DB_PASSWORD: "{PASSWORD}"
      DATABASE_URL: "postgres://etl:{URL_PASSWORD}@db/prod"
      REGION: eu
    run: echo "pw is $DB_PASSWORD at $DATABASE_URL in $REGION"
"""


def _run(folder: Path) -> tuple[dagnb.Run, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = dagnb.load(folder / "wf.yml").run(cache_directory=folder / "cache",
                                               executor="local")
    return run, [str(w.message) for w in caught]


def _files_holding(folder: Path, *values: str) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()
            and any(value.encode() in path.read_bytes() for value in values)]


def test_a_secret_written_into_env_is_masked_kept_out_of_the_cache_and_warned_of(tmp_path):
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    run, said = _run(tmp_path)
    assert run.states() == {"a": "succeeded"}
    assert run.logs("a")["line"].tolist() == ["pw is *** at postgres://etl:***@db/prod in eu"]
    assert _files_holding(tmp_path / "cache", PASSWORD, URL_PASSWORD) == []
    assert [line for line in said if "written into the step" in line] == [
        "step 'a': env DB_PASSWORD holds a secret (by its name) written into the step: runs "
        "mask it and the cache leaves it out, but the workflow file or notebook holds it in "
        "clear; remove it from env, set DB_PASSWORD in the environment and list it under "
        "the step's secrets",
        "step 'a': env DATABASE_URL holds a URL's password written into the step: runs "
        "mask it and the cache leaves it out, but the workflow file or notebook holds it in "
        "clear; remove it from env, set DATABASE_URL in the environment and list it under "
        "the step's secrets"]
    assert _run(tmp_path)[0].states() == {"a": "cached"}  # (the key counts it all the same)
    (tmp_path / "wf.yml").write_text(WORKFLOW.replace(PASSWORD, "CorrectHorse43Battery"))
    graph = dagnb.load(tmp_path / "wf.yml")
    assert graph.explain("a", cache_directory=tmp_path / "cache") == [
        "env changed (one of DATABASE_URL, DB_PASSWORD, whose values are not shown)"]


def test_a_name_in_both_secrets_and_env_is_refused(tmp_path):
    with pytest.raises(InvalidStepError, match=r"^step 'a': DB_PASSWORD is in both its "
                                               r"secrets and its env; a secret's value comes "
                                               r"from the environment"):
        dagnb.Step("a", run="true", secrets=["DB_PASSWORD"], env={"DB_PASSWORD": "x" * 12})


@pytest.mark.parametrize(("env", "found"), [
    ({"DB_PASSWORD": PASSWORD}, {"DB_PASSWORD": PASSWORD}),
    ({"DB_PASSWORD": "dev"}, {}),  # (too short to mask wherever it is)
    ({"DB_PASSWORD": "postgres"}, {}),  # (a plain word: ordinary output holds it)
    ({"PASSWORD_FILE": "/run/secrets/db"}, {}),  # (the name of where one is)
    ({"URL": f"https://u:{URL_PASSWORD}@host/x"}, {"URL:password": URL_PASSWORD}),
    ({"URL": "https://u:pw@host/x"}, {}),  # (too short a password to mask)
    ({"REGION": "eu-west-1"}, {}),
])
def test_the_secrets_written_into_an_env(env, found):
    assert written_secrets(env) == found
