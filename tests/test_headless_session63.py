"""`dagnb run NOTEBOOK --param` refuses a secret's value before the kernel starts: the
injected-parameters cell would hold it in clear, and the --output notebook with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat as nbf
import pytest

from dagnb.errors import WorkflowError
from dagnb.notebook import headless
from dagnb.notebook.document import declared_secrets
from dagnb.notebook.headless import run_notebook

TOKEN = "tok-9f8e7d6c5b4a3210zyx"


def _notebook(folder: Path, *, secret_line: str = " --secret API_TOKEN") -> Path:
    """A first cell that leaves a mark (the kernel ran), a parameters cell, a step that
    reads ``API_TOKEN`` as a secret, and a cell printing the parameters."""
    parameters = nbf.v4.new_code_cell("api_key = ''\nlabel = 'none'")
    parameters.metadata["tags"] = ["parameters"]
    step = (f"%%dagger call --python{secret_line} --outputs length\n"
            "import os\nlength = len(os.environ.get('API_TOKEN', ''))\n")
    cells = [nbf.v4.new_code_cell(f"open({str(folder / 'started.txt')!r}, 'w').close()\n"
                                  "%load_ext dagnb"),
             parameters, nbf.v4.new_code_cell(step),
             nbf.v4.new_code_cell("print('label', label, 'key', api_key, 'length', length)")]
    path = folder / "nb.ipynb"
    nbf.write(nbf.v4.new_notebook(cells=cells), path)
    return path


def _dagnb(*argv: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CONFIG": "none", **env}
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _files_holding(folder: Path, text: str) -> list[str]:
    return [str(path.relative_to(folder)) for path in folder.rglob("*")
            if path.is_file() and text.encode() in path.read_bytes()]


@pytest.mark.slow
def test_a_param_holding_a_declared_secret_is_refused_before_the_kernel_starts(tmp_path):
    path = _notebook(tmp_path)
    before = path.read_bytes()
    earlier = tmp_path / "out.ipynb"
    earlier.write_text("an earlier run's output\n")
    done = _dagnb("run", str(path), "-p", f"api_key={TOKEN}", "-o", str(earlier),
                  "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path,
                  env={"API_TOKEN": TOKEN})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert "--param 'api_key' holds the value of secret 'API_TOKEN'" in done.stderr
    assert "--secret API_TOKEN on the %%dagger cell" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert not (tmp_path / "started.txt").exists()  # refused before the kernel started
    assert path.read_bytes() == before
    assert earlier.read_text() == "an earlier run's output\n"
    assert _files_holding(tmp_path, TOKEN) == []


@pytest.mark.slow
def test_a_param_whose_value_a_variable_named_as_a_secret_holds_is_refused(tmp_path):
    path = _notebook(tmp_path, secret_line="")  # (no cell declares it)
    done = _dagnb("run", str(path), "-p", f"api_key={TOKEN}", "-o", "out.ipynb",
                  cwd=tmp_path, env={"HF_TOKEN": TOKEN})
    assert done.returncode == 2, done.stderr
    assert "--param 'api_key' holds the value of secret 'HF_TOKEN'" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert not (tmp_path / "out.ipynb").exists()
    assert _files_holding(tmp_path, TOKEN) == []


@pytest.mark.slow
def test_the_secret_read_as_the_refusal_says_stays_out_of_the_output_and_cache(tmp_path):
    """The fix the message names: the step reads the secret from the environment; an
    ordinary param still runs."""
    path = _notebook(tmp_path)
    done = _dagnb("run", str(path), "-p", "label=plain", "-o", "out.ipynb",
                  "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path,
                  env={"API_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    assert f"label plain key  length {len(TOKEN)}" in done.stdout
    assert TOKEN not in done.stdout + done.stderr
    assert (tmp_path / "out.ipynb").exists()
    assert _files_holding(tmp_path, TOKEN) == []


@pytest.mark.parametrize(("params", "typed"), [
    ({"api_key": f"Bearer {TOKEN}"}, {}),  # held inside the value
    ({"api_key": TOKEN}, {"api_key": f'"{TOKEN}"'}),  # typed as quoted JSON text
    ({"api_key": [TOKEN]}, {}),  # inside a list
])
def test_a_param_holding_a_declared_secret_in_any_form_is_refused(tmp_path, monkeypatch,
                                                                  params, typed):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    with pytest.raises(WorkflowError, match="'api_key' holds the value of secret 'API_TOKEN'"):
        run_notebook(_notebook(tmp_path), params=params, param_texts=typed)


def test_a_secret_a_python_cell_declares_counts_too(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_KEY", TOKEN)  # (not named as a secret: declared only)
    path = tmp_path / "nb.py"
    path.write_text("# %% tags=[\"parameters\"]\nkey = ''\n\n"
                    "# %%\ngraph.add(dagnb.Step('call', run='true', secrets=['SERVICE_KEY']))\n")
    with pytest.raises(WorkflowError, match="'key' holds the value of secret 'SERVICE_KEY'"):
        run_notebook(path, params={"key": TOKEN})


def test_a_short_value_or_a_path_in_a_variable_named_as_a_secret_is_no_refusal(
        tmp_path, monkeypatch):
    """``dev`` is in too many params; a credentials file's path is not the key."""
    key_file = tmp_path / "key.json"
    key_file.write_text("{}")
    monkeypatch.setenv("DB_PASSWORD", "dev")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    found = headless._named_secret_values(os.environ)
    assert "dev" not in found and str(key_file) not in found
    headless._refuse_secret_params({"stage": "dev", "credentials": str(key_file)}, {}, [])


@pytest.mark.parametrize("name", ["TOKENIZER_NAME", "OAUTH_TOKEN_URL", "SECRET_NAME",
                                  "PRIVATE_REGISTRY"])
def test_a_variable_merely_named_like_a_secret_refuses_no_param(monkeypatch, name):
    """``-p model=bert-base-uncased`` was refused as secret 'TOKENIZER_NAME''s value."""
    monkeypatch.setenv(name, "bert-base-uncased")
    assert "bert-base-uncased" not in headless._named_secret_values(os.environ)
    headless._refuse_secret_params({"model": "bert-base-uncased"}, {}, [])


def test_a_variable_named_as_a_secret_beyond_doubt_still_refuses(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    with pytest.raises(WorkflowError, match="secret 'HF_TOKEN'"):
        headless._refuse_secret_params({"model": "hf_abcdefghijklmnop"}, {}, [])


def test_declared_secrets_are_read_from_lines_and_python_cells():
    cells = [("code", "%%dagger a --secret A_TOKEN --secret=B_KEY --env X=1\necho"),
             ("code", "%%dagger b --secret $name\necho"),
             ("code", "dagnb.Step('c', run='true', secrets=('C_PASS',))"),
             ("markdown", "secrets=['NOT_CODE']")]
    assert declared_secrets(cells) == {"A_TOKEN", "B_KEY", "C_PASS"}


@pytest.mark.parametrize("name", ["SECRETKEY", "DJANGO_SECRET_KEY", "DB_PASSWORDS",
                                  "STRIPE_API_KEYS"])
def test_a_secret_word_with_key_or_a_plural_is_still_surely_secret(name):
    from dagnb.model.masking import named_surely_secret

    assert named_surely_secret(name)
