"""Secrets never reach logs, events or other steps, whatever form they are printed in."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
import shlex
import sys
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.executors.base import Outcome, Task
from dagnb.model.masking import MIN_LINE, Masker
from dagnb.testing import FakeExecutor
from dagnb.workflows.loader import loads

# The stub engine fixtures (stub, dagger_stub); see dagger_stub/fixtures.py.
pytest_plugins = ["dagger_stub.fixtures"]

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
       "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----")


@pytest.mark.parametrize("form", [
    PEM,
    base64.b64encode(PEM.encode()).decode(),
    urllib.parse.quote(PEM, safe=""),
    json.dumps(PEM),
    repr(PEM),
])
def test_every_leak_form_of_a_multiline_secret_is_masked(form):
    masked = Masker([PEM])(form)
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in masked
    assert "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj" not in masked
    assert "***" in masked


def test_short_lines_of_a_secret_do_not_blank_ordinary_output():
    assert Masker(["a\nlong-enough-line"])("a cat sat") == "a cat sat"


def _leaks(run, value: str) -> list[str]:
    lines = run.logs()["line"].tolist()
    events = [repr(e.data) for e in run.events]
    return [text for text in lines + events if value in text]


def test_a_pem_key_printed_line_by_line_or_encoded_leaks_nowhere(workdir, monkeypatch):
    monkeypatch.setenv("DEPLOY_KEY", PEM)
    step = Step("deploy", secrets=("DEPLOY_KEY",),
                run='printf "%s\\n" "$DEPLOY_KEY"; printf "%s" "$DEPLOY_KEY" | base64 -w0; echo')
    run = Graph("s", [step]).run(executor="local", cache=False)
    assert run.states() == {"deploy": "succeeded"}
    for secret_line in PEM.splitlines()[1:3]:
        assert _leaks(run, secret_line) == []
    assert _leaks(run, base64.b64encode(PEM.encode()).decode()) == []


def test_a_step_sees_only_the_secrets_it_declares(workdir, monkeypatch):
    monkeypatch.setenv("API_TOKEN", "tok-123456789")
    graph = Graph("s", [
        Step("uses", secrets=("API_TOKEN",), run='test -n "$API_TOKEN" && echo has'),
        Step("other", run='echo "token=[${API_TOKEN:-}]"'),
    ])
    run = graph.run(executor="local", cache=False)
    assert run.logs("uses")["line"].tolist() == ["has"]
    assert run.logs("other")["line"].tolist() == ["token=[]"]


def test_an_executor_cannot_give_one_step_secrets_that_reach_others(workdir, monkeypatch):
    """The steps that declare no secret share one mapping of none: it cannot be written."""
    monkeypatch.setenv("API_TOKEN", "tok-123456789")
    seen: list[Mapping[str, str]] = []

    class Writing(FakeExecutor):
        async def execute(self, task: Task) -> Outcome:
            seen.append(task.secrets)
            with contextlib.suppress(TypeError):
                task.secrets["API_TOKEN"] = "leaked"  # type: ignore[index]
            return await super().execute(task)

    graph = Graph("s", [Step("uses", run="true", secrets=("API_TOKEN",)),
                        Step("first", run="true", needs=["uses"]),
                        Step("second", run="true", needs=["first"])])
    run = graph.run(executor=Writing(), cache=False)
    assert run.ok
    assert [dict(found) for found in seen[1:]] == [{}, {}]


def test_a_run_of_some_steps_withholds_and_masks_the_secrets_the_others_declare(
        workdir, monkeypatch):
    """A notebook runs one cell's steps at a time: a secret another cell's step declares
    must not reach this cell's steps, nor its output, nor the cache."""
    secret = "tok-987654321-zz"
    monkeypatch.setenv("API_TOKEN", secret)

    def peek() -> None:
        import os

        print("py sees", os.environ.get("API_TOKEN", "nothing"))

    graph = Graph("s", [
        Step("uses", secrets=("API_TOKEN",), run='test -n "$API_TOKEN"'),
        Step("other", run='echo "other sees ${API_TOKEN:-nothing}"'),
        Step("py", func=peek),
    ])
    run = graph.run(["other", "py"], executor="local")
    assert run.states() == {"other": "succeeded", "py": "succeeded"}
    assert run.logs("other")["line"].tolist() == ["other sees nothing"]
    assert run.logs("py")["line"].tolist() == ["py sees ***"]  # (in-process: masked)
    cache = workdir / ".dagnb_cache"
    assert cache.is_dir()
    stored = [p for p in cache.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert stored == []


def test_a_workflows_default_secret_stays_masked_in_a_step_that_lists_its_own(
        workdir, monkeypatch):
    """The step's list replaced the defaults': its output reached the cache unmasked."""
    monkeypatch.setenv("DB_PASSWORD", "db-pass-123456")
    monkeypatch.setenv("API_TOKEN", "api-token-98765")
    graph = loads(
        "defaults: {secrets: [DB_PASSWORD]}\n"
        "steps:\n"
        "  a: {secrets: [API_TOKEN], run: 'echo \"db=$DB_PASSWORD api=$API_TOKEN\"'}\n")
    run = graph.run(executor="local")
    assert run.logs("a")["line"].tolist() == ["db=*** api=***"]
    cache = workdir / ".dagnb_cache"
    stored = [p for p in cache.rglob("*") if p.is_file() and b"db-pass-123456" in p.read_bytes()]
    assert stored == []


def test_a_result_or_file_that_holds_a_secret_is_not_cached(workdir, monkeypatch):
    secret = "zz-TOPSECRET-42-abcdef"
    monkeypatch.setenv("MYTOKEN", secret)

    def peek() -> str:
        import os

        return os.environ["MYTOKEN"]  # (in-process: os.environ is the kernel's)

    graph = Graph("s", [
        Step("user", secrets=("MYTOKEN",), run='printf "%s" "$MYTOKEN" > "$DAGNB_OUT/t"'),
        Step("peek", func=peek),
        Step("plain", run='echo fine > "$DAGNB_OUT/f"'),
    ])
    with pytest.warns(UserWarning, match="hold the value of secret 'MYTOKEN'") as caught:
        run = graph.run(executor="local")
    assert run.states() == {"user": "succeeded", "peek": "succeeded", "plain": "succeeded"}
    assert run.result("peek") == secret  # (served to this run, not kept)
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["peek", "user"]
    cache = workdir / ".dagnb_cache"  # (the run's own folder holds what the step wrote)
    stored = [p for p in cache.rglob("*") if p.is_file() and ".runs" not in p.parts
              and secret.encode() in p.read_bytes()]
    assert stored == []
    with pytest.warns(UserWarning):
        again = graph.run(executor="local")
    assert again.states() == {"user": "succeeded", "peek": "succeeded", "plain": "cached"}


# shell text writing the secret into the name of an output, and the secret (one holding
# a "/" spans two folders); $WD is the test's folder, which holds t-SECRET/ and outside/
_NAMING = {
    "file": 'touch "$DAGNB_OUT/$API_TOKEN.txt"',
    "folder": 'mkdir "$DAGNB_OUT/dir-$API_TOKEN"',
    "link": 'echo x > "$DAGNB_OUT/f"; ln -s f "$DAGNB_OUT/link-$API_TOKEN"',
    "link target": 'ln -s "$WD/t-$API_TOKEN/f" "$DAGNB_OUT/l"',
    "broken link's target": 'ln -s "/nonexistent/$API_TOKEN" "$DAGNB_OUT/l"',
    "base64": 'touch "$DAGNB_OUT/$(printf %s "$API_TOKEN" | base64).txt"',
    "file in a linked folder": 'ln -s "$WD/outside" "$DAGNB_OUT/o"',
    "across folders": 'mkdir -p "$DAGNB_OUT/$API_TOKEN"',
    # (a link to the folder, met first, had that folder passed over where it really is)
    "across folders, a link to it first": (
        'mkdir -p "$DAGNB_OUT/deep/${API_TOKEN%/*}"; touch "$DAGNB_OUT/deep/$API_TOKEN"; '
        'ln -s "deep/${API_TOKEN%/*}" "$DAGNB_OUT/ln"'),
}


@pytest.mark.parametrize("how", list(_NAMING))
def test_an_output_whose_name_holds_a_secret_is_not_cached(workdir, monkeypatch, how):
    """A file, folder or link named after a secret (or a link to such a path) was stored,
    its name in clear in the entry's folder and manifest (and in stat-cache.json)."""
    secret = "Kx7Secret/TokenVal" if how.startswith("across") else "Kx7SecretTokenVal"
    monkeypatch.setenv("API_TOKEN", secret)
    for made in (workdir / "outside" / f"in-{secret}", workdir / f"t-{secret}" / "f"):
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_text("x")
    graph = Graph("s", [
        Step("named", secrets=("API_TOKEN",), env={"WD": str(workdir)}, run=_NAMING[how]),
        Step("plain", secrets=("API_TOKEN",), run='echo fine > "$DAGNB_OUT/f"'),
    ])
    for _ in range(2):  # (run again: not served from the cache)
        with pytest.warns(UserWarning, match=r"'named' ran but was not cached: the name of "
                          r".* holds the value of secret 'API_TOKEN'.*name its outputs") as caught:
            run = graph.run(executor="local")
        assert run.states()["named"] == "succeeded"
        assert all(secret not in str(w.message) for w in caught)
    assert run.states()["plain"] == "cached"
    cache = workdir / ".dagnb_cache"  # (but for the folder the step wrote in the run's)
    kept = [p for p in cache.rglob("*") if not (p.relative_to(cache).parts[:1] == (".runs",)
                                                and "out" in p.relative_to(cache).parts)]
    assert [p for p in kept if secret in str(p)] == []
    assert [p for p in kept if p.is_file() and secret.encode() in p.read_bytes()] == []


def test_outputs_holding_links_in_a_loop_and_no_secret_are_cached(workdir, monkeypatch):
    """The search of the outputs' names walks a linked folder once: a loop of links ends."""
    monkeypatch.setenv("API_TOKEN", "Kx7SecretTokenVal")
    graph = Graph("s", [Step("loop", secrets=("API_TOKEN",), run=(
        'mkdir "$DAGNB_OUT/a"; echo x > "$DAGNB_OUT/a/f"; ln -s .. "$DAGNB_OUT/a/up"; '
        'ln -s . "$DAGNB_OUT/self"'))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph.run(executor="local").raise_for_status()
    assert graph.run(executor="local").states() == {"loop": "cached"}


# a global that a cached function reads, which a step fills with a secret
_REQUEST_HEADERS: dict[str, str] = {}


def _files_holding(folder, text: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.parametrize("where", ["step", "thread of an async step", "thread of a pool"])
def test_a_memory_call_in_a_step_with_a_secret_keeps_it_out_of_the_cache(
        workdir, monkeypatch, where):
    """A dagnb.Memory function that a step declaring a secret calls wrote the secret in
    clear into its cache: given as an argument, read from a global made of it, or held
    in its result. Its key's descriptions are masked now (its digests are not), and a
    result holding it is returned, not stored, with a warning naming the secret."""
    secret = "sk-live-4f9a8b7c6d5e"
    monkeypatch.setenv("API_TOKEN", secret)
    monkeypatch.setitem(_REQUEST_HEADERS, "Authorization", "")
    memory = dagnb.Memory(workdir / ".dagnb_cache")
    calls = []

    @memory.cache
    def with_token(url, token):
        calls.append("token")
        return len(url) + len(token)

    @memory.cache
    def with_headers(url):
        calls.append("headers")
        return len(url) + len(_REQUEST_HEADERS["Authorization"])

    @memory.cache
    def session(url):
        import os

        calls.append("session")
        return {"url": url, "auth": "Bearer " + os.environ["API_TOKEN"]}

    def use() -> int:
        import os

        token = os.environ["API_TOKEN"]
        _REQUEST_HEADERS["Authorization"] = f"Bearer {token}"
        made = session("http://z")
        assert made["auth"] == f"Bearer {token}"
        assert session.call_and_shelve("http://z").get() == made  # (kept in memory only)
        return with_token("http://x", token) + with_headers("http://y") + len(made["auth"])

    async def use_in_a_thread() -> int:
        import asyncio

        return await asyncio.to_thread(use)  # (a thread in the step's context)

    def use_in_a_pool() -> int:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:  # (its thread has not the step's context)
            return pool.submit(use).result()

    func = {"step": use, "thread of an async step": use_in_a_thread,
            "thread of a pool": use_in_a_pool}[where]
    graph = Graph("s", [Step("use", func=func, secrets=("API_TOKEN",), cache=False)])
    expected = 8 + len(secret) + 8 + len("Bearer ") * 2 + len(secret) * 2
    for _ in range(2):
        with pytest.warns(UserWarning, match=r"session: .*not cached: its result holds the "
                                             r"value of secret 'API_TOKEN'") as caught:
            run = graph.run(executor="local")
        assert run.result("use") == expected
        assert all(secret not in str(w.message) for w in caught)
    assert calls == ["session"] * 2 + ["token", "headers"] + ["session"] * 2  # the others hit
    assert _files_holding(workdir / ".dagnb_cache", secret) == []


def test_a_long_secret_through_wrapping_base64_is_masked_line_by_line(workdir, monkeypatch):
    secret = "s3cr3t-" + "".join(chr(ord("a") + i % 26) for i in range(61))  # 68 chars
    monkeypatch.setenv("LONG_TOKEN", secret)
    step = Step("enc", secrets=("LONG_TOKEN",),
                run='printf "%s" "$LONG_TOKEN" | base64; printf "%s" "$LONG_TOKEN" | base64 -w 64')
    run = Graph("s", [step]).run(executor="local", cache=False)
    lines = run.logs("enc")["line"].tolist()
    assert len(lines) == 4 and all(line.strip("*=") == "" for line in lines), lines


def test_a_short_secret_does_not_keep_every_result_out_of_the_cache():
    from dagnb.model.masking import SecretFinder

    finder = SecretFinder({"MODE": "dev", "TOKEN": "tok-1234567"})
    assert finder.find(b"the device developer") is None
    assert finder.find(b"..tok-1234567..") == "TOKEN"


def test_a_secret_in_a_numpy_array_of_strings_is_found():
    import pickle

    import numpy as np

    from dagnb.model.masking import SecretFinder

    stored = pickle.dumps(np.array(["user", "tok-1234567"]), protocol=5)
    assert SecretFinder({"TOKEN": "tok-1234567"}).find(stored) == "TOKEN"


def test_a_secret_inside_longer_base64_is_masked_and_kept_out_of_the_cache(
        workdir, monkeypatch):
    """A Basic auth header encodes ``user:token`` (``curl -v`` prints it): the token's
    base64 then starts at any offset of a 3-byte group, and spelled otherwise than alone."""
    secret = "Zq8-sEcReT-vAlUe-778"
    monkeypatch.setenv("API_TOKEN", secret)
    encoded = {user: base64.b64encode(f"{user}:{secret}".encode()).decode()
               for user in ("bob", "dave")}  # (the token 1 and 2 bytes into a group)
    step = Step("auth", secrets=("API_TOKEN",),
                run='for user in bob dave; do printf "%s" "$user:$API_TOKEN" | base64;'
                    ' done; printf "Basic %s" "$(printf "bob:%s" "$API_TOKEN" | base64)"'
                    ' > "$DAGNB_OUT/header"')
    with pytest.warns(UserWarning, match="hold the value of secret 'API_TOKEN'"):
        run = Graph("s", [step]).run(executor="local")
    lines = run.logs("auth")["line"].tolist()
    assert len(lines) == 2 and all("***" in line for line in lines), lines
    assert [e for e in encoded.values() if any(e[8:-4] in line for line in lines)] == []
    cache = workdir / ".dagnb_cache"  # (the run's own folder holds what the step wrote)
    stored = [p for p in cache.rglob("*") if p.is_file() and ".runs" not in p.parts
              and any(e[8:-4].encode() in p.read_bytes() for e in encoded.values())]
    assert stored == []


def test_a_secret_with_quotes_is_masked_as_shells_and_python_quote_it(workdir, monkeypatch):
    """A generated password often holds a quote, a ``$`` or a backslash: ``set -x``
    (the usual way to debug a shell step), ``declare -p``, ``printf %q`` and
    ``shlex.quote`` print it escaped, each its own way; a bytes repr escapes non-ASCII."""
    monkeypatch.setenv("DB_PASSWORD", "p'a\"s$s w\\-rd")
    monkeypatch.setenv("API_TOKEN", "t\u00f6k-\u00fcn-123456")
    script = ("import os, shlex; print(shlex.quote(os.environ['DB_PASSWORD'])); "
              "print(os.environ['API_TOKEN'].encode())")
    step = Step("debug", secrets=("DB_PASSWORD", "API_TOKEN"), env={"SCRIPT": script},
                run='set -x; : "$DB_PASSWORD"; set +x; declare -p DB_PASSWORD; '
                    'printf "%q\\n" "$DB_PASSWORD"; python3 -c "$SCRIPT"')
    run = Graph("s", [step]).run(executor="local", cache=False)
    assert run.ok
    lines = [line for line in run.logs("debug")["line"].tolist() if line != "+ set +x"]
    assert len(lines) == 5 and all("***" in line for line in lines), lines
    assert [line for line in lines if "rd" in line or "123456" in line] == []


def test_a_secret_with_an_apostrophe_in_the_repr_of_a_shell_line_is_masked() -> None:
    """A ``%dagger`` line's words rejoined by ``shlex.join``, quoted in its refusal with
    ``!r``: the apostrophe is ``'\\'"\\'"\\'`` there, which left the secret's halves in clear."""
    secret = "Summer 2024'xyz"
    shown = Masker([secret])(repr(shlex.join(["status", secret])))
    assert shown == """'status \\'***\\''""", shown


def test_a_secret_in_utf8_json_is_masked(workdir, monkeypatch):
    """``ensure_ascii=False``, the usual way to write UTF-8 JSON, escapes a quote but not
    a non-ASCII letter: a secret holding both was shown in clear in that spelling."""
    monkeypatch.setenv("DB_PASSWORD", 'Grüße"$2024')

    def dump() -> None:
        import json
        import os

        token = os.environ["DB_PASSWORD"]
        print(json.dumps({"password": token}))
        print(json.dumps({"password": token}, ensure_ascii=False))

    run = Graph("s", [Step("dump", func=dump, secrets=("DB_PASSWORD",))]).run(
        executor="local", cache=False)
    assert run.logs("dump")["line"].tolist() == ['{"password": "***"}'] * 2


def test_what_a_steps_threads_print_is_masked_though_not_captured(workdir, monkeypatch, capsys):
    """A thread does not inherit the step's context, so its prints reach no step's log:
    they went to the terminal, or the notebook cell's output, in clear. A secret too
    short to be looked for in results is not masked there (the notebook's own prints
    pass there too: a secret ``dev`` would mangle every ``device``)."""
    secret = "tok-THREAD-5551234"
    monkeypatch.setenv("API_TOKEN", secret)
    monkeypatch.setenv("MODE", "dev")

    def fetch() -> int:
        import os
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            pool.map(lambda n: print(f"page {n}?token={os.environ['API_TOKEN']}"), [1, 2])
            pool.submit(print, "on device")
        return 2

    run = Graph("s", [Step("fetch", func=fetch, secrets=("API_TOKEN", "MODE"))]).run(
        executor="local", cache=False)
    assert run.result("fetch") == 2
    printed = capsys.readouterr().out
    assert "page 1?token=***" in printed and secret not in printed
    assert "on device" in printed
    print(f"after the run: {secret}")  # (the notebook's own prints, once it is over, are not)
    assert secret in capsys.readouterr().out


def test_bytes_a_step_writes_to_sys_stdout_buffer_reach_its_log_masked(
        workdir, monkeypatch, capsys):
    """``sys.stdout.buffer`` went around the capture: to the terminal in clear, and not
    in the step's log. Its bytes are now the step's lines, decoded (a character split
    over two writes whole, a byte that is no UTF-8 escaped) and masked as prints are."""
    secret = "tok-BYTES-7771234"
    monkeypatch.setenv("API_TOKEN", secret)

    def dump() -> int:
        import os
        import sys

        euro = "price 3 \u20ac".encode()
        sys.stdout.buffer.write(euro[:-1])
        sys.stdout.buffer.write(euro[-1:] + b" \xff\n")
        sys.stderr.buffer.write(f"token={os.environ['API_TOKEN']}\n".encode())
        sys.stdout.buffer.writelines([f"lines {os.environ['API_TOKEN']}\n".encode()])
        wrapper = io.TextIOWrapper(sys.stdout.buffer, write_through=True)
        wrapper.write("through a wrapper\n")
        del wrapper  # (closing it leaves the stream open)
        sys.stdout.buffer.flush()
        sys.stdout.buffer.write(euro[:-1])  # a character cut short as the step ends
        return 1

    run = Graph("s", [Step("dump", func=dump, secrets=("API_TOKEN",))]).run(
        executor="local", cache=False)
    assert run.ok
    logged = run.logs("dump")[["stream", "line"]].values.tolist()
    assert logged == [["stdout", "price 3 \u20ac \\xff"], ["stderr", "token=***"],
                      ["stdout", "lines ***"], ["stdout", "through a wrapper"],
                      ["stdout", "price 3 \\xe2\\x82"]]
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err and "price" not in printed.out


def test_sys_stdout_buffer_in_a_step_takes_bytes_alone_and_counts_them(workdir, capsys):
    """As a real buffer: what is no bytes is a TypeError (an int wrote that many NUL
    bytes first), and a write returns the bytes it took (an array's, not its items)."""
    import array

    def write() -> list:
        errors = []
        for wrong in (5, "text"):
            try:
                sys.stdout.buffer.write(wrong)
            except TypeError as exc:
                errors.append(type(exc).__name__)
        return [*errors, sys.stdout.buffer.write(array.array("i", [1, 2]))]

    run = Graph("s", [Step("write", func=write)]).run(executor="local", cache=False)
    assert run.result("write") == ["TypeError", "TypeError", 8]
    assert "\\x00\\x00\\x00\\x00\\x00" not in "".join(run.logs("write")["line"])


def test_binary_bytes_outside_steps_pass_as_they_are_while_text_is_masked(
        workdir, monkeypatch, capsysbinary):
    """While a run with secrets goes on, bytes written outside any step (a thread of a
    step) that are text are masked on their way out; others (a binary file piped out)
    went out rewritten as escaped text, 640 bytes for 256."""
    import threading

    secret = "tok-BINARY-4441234"
    monkeypatch.setenv("API_TOKEN", secret)
    blob = bytes(range(256))

    def pipe() -> int:
        import os

        def out() -> None:
            sys.stdout.buffer.write(blob)
            sys.stdout.buffer.write(f"token={os.environ['API_TOKEN']}\n".encode())
            sys.stdout.buffer.flush()

        thread = threading.Thread(target=out)
        thread.start()
        thread.join()
        return 1

    run = Graph("s", [Step("pipe", func=pipe, secrets=("API_TOKEN",))]).run(
        executor="local", cache=False)
    assert run.ok
    printed = capsysbinary.readouterr().out
    assert blob in printed and b"token=***" in printed and secret.encode() not in printed


def test_a_step_finds_no_sys_stdout_buffer_where_the_stream_it_replaced_has_none(
        workdir, monkeypatch):
    """ipykernel's stream has no ``buffer``: in a notebook, code that looks for one (and
    falls back when there is none) finds none during a run either, as without dagnb."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())

    def look() -> bool:
        return hasattr(sys.stdout, "buffer")

    run = Graph("s", [Step("look", func=look)]).run(executor="local", cache=False)
    assert run.result("look") is False


def test_a_step_without_sys_stdout_buffer_fails_with_no_frame_of_dagnbs(workdir, monkeypatch):
    """The AttributeError a step meets looking up ``sys.stdout.buffer`` where the stream
    has none (ipykernel's) is the stream's, as without dagnb; its traceback showed a
    frame of dagnb's stand-in for ``sys.stdout`` (``__getattr__`` in capture.py)."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())

    def look() -> int:
        return sys.stdout.buffer.write(b"x")

    run = Graph("s", [Step("look", func=look)]).run(executor="local", cache=False)
    logged = run.logs("look", stream="stderr")["line"].tolist()
    assert logged[-1] == "AttributeError: '_io.StringIO' object has no attribute 'buffer'"
    frames = [line for line in logged if line.startswith("  File ")]
    assert len(frames) == 1 and "in look" in frames[0], logged


TOKEN = "tok-SPLIT-1234567"
PASS = "p\u00e4ss-w\u00f6rt-9876"  # (split inside a character, as bytes)


def _speak_in_pieces() -> None:
    """Write the secrets a piece at a time, pausing between pieces, flushing, to both
    streams, as text and as bytes; and a line that begins as a secret does."""
    import time

    out, err = sys.stdout, sys.stderr
    out.write(TOKEN[:4])
    out.write(TOKEN[4:] + "\n")
    print(TOKEN[:4], end="", flush=True)
    time.sleep(0.2)
    print(TOKEN[4:])
    encoded = f"key {PASS}\n".encode()
    cut = encoded.index("\u00e4".encode()) + 1  # (inside the character)
    out.buffer.write(encoded[:cut])
    out.buffer.flush()
    out.buffer.write(encoded[cut:])
    err.write(f"token={TOKEN[:9]}")
    err.write(f"{TOKEN[9:]} done\n")
    print("tick t", end="", flush=True)  # (t, as tok- begins)
    print("ock")


@pytest.mark.parametrize("writer", ["thread", "notebook"])
def test_a_secret_written_in_pieces_outside_steps_is_masked_whole(
        workdir, monkeypatch, capsys, writer):
    """What a step's thread prints, or the notebook itself while a run goes on, is masked
    on its way out a write at a time: a secret written in pieces was shown in clear,
    whatever the pause between them, and a flush. Now the end of an unfinished line that
    may begin a secret waits for what follows."""
    import threading

    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("PASSWORD", PASS)
    started, done = threading.Event(), threading.Event()

    def step() -> int:
        if writer == "thread":
            thread = threading.Thread(target=_speak_in_pieces)
            thread.start()
            thread.join()
        else:  # (the notebook's own prints, while a background run goes on)
            started.set()
            done.wait(30)
        return 1

    graph = Graph("s", [Step("step", func=step, secrets=("API_TOKEN", "PASSWORD"))])
    runs = []
    background = threading.Thread(target=lambda: runs.append(graph.run(executor="local",
                                                                       cache=False)))
    background.start()
    if writer == "notebook":
        assert started.wait(30)
        _speak_in_pieces()
        done.set()
    background.join(30)
    printed = capsys.readouterr()
    assert printed.out == "***\n***\nkey ***\ntick tock\n"
    assert printed.err == "token=*** done\n"
    assert runs[0].ok


def test_another_threads_line_does_not_let_the_start_of_a_secret_go(
        workdir, monkeypatch, capsys):
    """Each thread's unfinished line waits on its own: the line another thread ends
    (the notebook's view printing a step's) let a thread's ``tok-`` go with it, and the
    rest of the secret then went alone, both in clear."""
    import threading

    monkeypatch.setenv("API_TOKEN", TOKEN)
    wrote, printed = threading.Event(), threading.Event()

    def step() -> int:
        def speak() -> None:
            print("thread", TOKEN[:4], end="", flush=True)
            wrote.set()
            printed.wait(30)
            print(TOKEN[4:])

        thread = threading.Thread(target=speak)
        thread.start()
        thread.join()
        return 1

    graph = Graph("s", [Step("step", func=step, secrets=("API_TOKEN",))])
    runs = []
    background = threading.Thread(target=lambda: runs.append(graph.run(executor="local",
                                                                       cache=False)))
    background.start()
    assert wrote.wait(30)
    print("a line of the notebook's")
    printed.set()
    background.join(30)
    assert capsys.readouterr().out == "thread a line of the notebook's\n***\n"
    assert runs[0].ok


def test_outside_steps_what_can_begin_no_secret_shows_at_once_and_the_rest_as_the_run_ends(
        workdir, monkeypatch):
    """Only what may begin a secret waits: the rest of a write reaches the stream as it
    comes, and what still waits as the run ends is shown then. A run without secrets
    passes each write on as it is, at once."""
    import threading

    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    seen: dict[str, list[str]] = {}

    def writer(name: str, recorder: Recorder) -> Any:
        def write() -> None:
            thread = threading.Thread(target=lambda: (
                sys.stdout.write(f"{name}: tok-"), sys.stdout.flush()))
            thread.start()
            thread.join()
            seen[name] = list(recorder.writes)  # (what the stream had by then)
        return write

    # (the run without secrets first: one given earlier stays known to the process)
    for name, secrets in (("plain", ()), ("masked", ("API_TOKEN",))):
        if secrets:  # (set before: a variable named as a secret is masked undeclared too)
            monkeypatch.setenv("API_TOKEN", TOKEN)
        recorder = Recorder()
        monkeypatch.setattr(sys, "stdout", recorder)
        run = Graph("s", [Step(name, func=writer(name, recorder), secrets=secrets)]).run(
            executor="local", cache=False)
        assert run.ok
        # (what waits as the run ends is the last of its line: a secret's start masked)
        assert recorder.getvalue() == f"{name}: " + ("***" if secrets else "tok-")
    assert seen == {"masked": ["masked: "], "plain": ["plain: tok-"]}


def test_a_masker_tells_where_a_text_may_begin_a_secret_that_more_text_completes():
    mask = Masker([TOKEN, "4711", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIi"], words_below=MIN_LINE)
    cases = {"hello": 5, "tok-": 0, "say tok-SPLIT-12": 4, "say tok-x": 9, "pin 4711": 4,
             "pin 47112": 9, f"{TOKEN} and t": len(TOKEN) + 5,
             "cell eyJhbGciOiJIUzI1NiJ9.eyJ...": 5, "cut ...SPLIT-12345": 4,
             "cut ...SPLIT-12345 x": 20, f"b64 {base64.b64encode(TOKEN.encode()).decode()[:6]}": 4,
             "cut tok-SPLIT-12.": 4, "cut tok-SPLIT-12..": 4, "end.": 3, "end. ": 5,
             "dots ......": 8, "Training model...": 14, "Step 1 of 2.": 11, "ok tok-SP..": 3,
             "ok tok-S..": 8,
             "cut ...SPLIT.": 4}
    assert {text: mask.unfinished_from(text) for text in cases} == cases
    assert [mask.unfinished_from("line tok-", start) for start in (5, 6)] == [5, 9]
    assert Masker().unfinished_from("tok-") == 4


CUT = "tok-9f8e7d6c5b4a"  # (the reviewer's: shown cut short, its head or its tail)


def _echoed(monkeypatch, pieces: list[str], *, release: bool = False) -> str:
    """What the routing stream's echo shows of ``pieces`` written one by one outside
    any step while a run masks ``CUT`` and ``4711``, and let go at the end with
    ``release`` (the run ends)."""
    from dagnb.executors import capture

    monkeypatch.setattr(capture, "_masks", (Masker([CUT, "4711"], words_below=MIN_LINE),))
    shown = io.StringIO()
    echo = capture._HeldEcho(shown)
    for piece in pieces:
        echo.write(piece)
    if release:
        echo.release()
    return shown.getvalue()


def _chunks(text: str, size: int) -> list[str]:
    return [text[at:at + size] for at in range(0, len(text), size)]


@pytest.mark.parametrize(("line", "masked"), [
    (f"value {CUT[:10]}...\n", "value ***...\n"),
    (f"value {CUT[:10]}\u2026\n", "value ***\u2026\n"),
    (f"value '{CUT[:4]}...{CUT[-8:]}' end\n", "value 'tok-...***' end\n"),
    (f"at {CUT[:10]}..x and {CUT[:10]}. too\n", f"at {CUT[:10]}..x and {CUT[:10]}. too\n"),
], ids=["head", "head-unicode-ellipsis", "tail", "ellipsis-refuted"])
def test_a_secret_cut_short_by_an_ellipsis_streamed_in_small_pieces_is_masked(
        monkeypatch, line, masked):
    """A thread streaming ``value tok-9f8e7d...`` a character or three at a time: the
    secret's start was held back, but the first ``.`` let it go before the ellipsis was
    whole, in clear (10 of its 16 characters); in pieces of 7 it was masked. An
    ellipsis begun now waits to be finished (or refuted), and so does a tail's."""
    for size in range(1, 9):
        assert _echoed(monkeypatch, _chunks(line, size)) == masked, size


def test_dots_printed_one_by_one_show_with_at_most_five_held_back(monkeypatch):
    """An ellipsis begun waits, but a progress bar of dots is no secret's head: of a run
    of dots, three at most wait for what follows (a tail cut short: ``...c5b4a``)."""
    from dagnb.executors import capture

    shown = _echoed(monkeypatch, ["Loading"] + ["."] * 20)
    assert shown.startswith("Loading") and 15 <= shown.count(".") < 20
    monkeypatch.setattr(capture, "_masks", (Masker([CUT]),))
    assert _echoed(monkeypatch, ["Loading"] + ["."] * 20 + [CUT[-6:], "\n"]).endswith(
        "...***\n")


@pytest.mark.parametrize(("text", "shown"), [
    ("tok-9f", "***"), ("say tok-", "say ***"), ("say tok", "say tok"), ("hello", "hello"),
    (f"value {CUT[:10]}..", "value ***.."), (f"value {CUT[:10]}.", f"value {CUT[:10]}."),
    ("cut tok-9.", "cut tok-9."), ("hello.", "hello."), (f"{CUT} tok-9", "*** ***"),
    ("pin 4711", "pin ***"), ("pin 471", "pin 471"), ("pin x471", "pin x471"),
    (base64.b64encode(CUT.encode()).decode()[:5], "***"),
])
def test_the_last_text_written_masks_the_start_of_a_secret_it_ends_with(text, shown):
    """What is let go with nothing after it (a run ends, a cell) showed a secret's start
    in clear (``tok-9f``, 6 of its 16 characters). Now one of four characters or more is
    masked, as the secret written whole there would be (``x471`` is no word, ``4711``
    masked only as one), and one an ellipsis begun cuts short; fewer characters end too
    much text that is none (``471`` of a total)."""
    assert Masker([CUT, "4711"], words_below=MIN_LINE).masked_as_last(text) == shown


def test_a_secrets_start_let_go_as_the_run_ends_is_masked(monkeypatch):
    assert _echoed(monkeypatch, ["half ", CUT[:6]], release=True) == "half ***"
    assert _echoed(monkeypatch, ["half ", CUT[:2]], release=True) == "half to"
    assert _echoed(monkeypatch, ["half ", CUT[:10], ".."], release=True) == "half ***.."


@pytest.mark.parametrize(("secret", "pieces", "shown"), [
    ("analytics2024", ["I like banana"], "I like banana"),
    ("analytics2024", ["I like ban", "ana"], "I like banana"),
    ("analytics2024", ["schema: analytics"], "schema: ***"),  # (a word's start: masked)
    ("analytics2024", ["schema: ", "analytics"], "schema: ***"),
    (CUT, ["I like tiktok"], "I like tiktok"),
    (CUT, ["say tok"], "say tok"),
    (CUT, [f"value {CUT[:10]}.."], "value ***.."),
    ("4711", ["Total: 471"], "Total: 471"),
    # (glued to a word, from MIN_LINE characters: most of a key after "0x" or "Bearer")
    ("9f8e7d6c5b4a3f2e", ["key=0x9f8e7d6c5b4a3f2"], "key=0x***"),
    (CUT, ["Bearer", CUT[:14]], "Bearer***"),
    ("mys3cretPassw0rd", ["id=x", "mys3cr"], "id=x***"),
], ids=["mid-word", "mid-word-split", "word", "word-split", "mid-word-cut", "short",
        "ellipsis-begun", "pin-short", "glued-hex", "glued-bearer", "glued-six"])
def test_what_is_let_go_last_masks_only_a_secrets_start_that_starts_a_word(
        monkeypatch, secret, pieces, shown):
    """What waits as output ends was masked from three characters on wherever it began a
    secret: ``I like banana`` showed as ``I like ban***`` (``ana`` of ``analytics2024``),
    ``Total: 471`` as ``Total: ***`` (a PIN ``4711``). Now only a start of four
    characters or more where a word starts, even one written in a piece of its own, and
    one of six or more anywhere (a reviewer's find: with the word rule alone, 15 of a
    16-character key glued to ``0x`` showed)."""
    from dagnb.executors import capture

    monkeypatch.setattr(capture, "_masks", (Masker([secret], words_below=MIN_LINE),))
    out = io.StringIO()
    echo = capture._HeldEcho(out)
    for piece in pieces:
        echo.write(piece)
    echo.release()
    assert out.getvalue() == shown


@pytest.mark.parametrize(("pieces", "shown"), [
    (["Training model..."], "Training model"),
    (["Step 1 of 2."], "Step 1 of 2"),
    (["Loading"] + ["."] * 5, "Loading.."),
    (["Saving."], "Saving"),
    ([f"value {CUT[:10]}."], "value "),
])
def test_a_status_line_ending_in_dots_shows_but_for_the_dots(monkeypatch, pieces, shown):
    """A word before dots waited with them, until the line ended, though it begins no
    secret (``Training model...`` showed ``Training `` for as long as the model
    trained). Now only what may begin a secret's head waits, or the last three dots (a
    tail cut short may follow them)."""
    assert _echoed(monkeypatch, pieces) == shown
    # (the dots that wait still mask a tail written after them, the ellipsis finished)
    assert _echoed(monkeypatch, [*pieces, "..", CUT[-6:], "\n"]).endswith("...***\n")


SEASON = "Summer2024!"


@pytest.mark.parametrize(("secret", "text", "shown"), [
    (SEASON, "Meet me in Summer.", "Meet me in Summer."),
    (SEASON, "Meet me in Summer,", "Meet me in Summer,"),
    (SEASON, "Meet me in Summer!", "Meet me in Summer!"),
    (SEASON, "Meet me in Summer?", "Meet me in Summer?"),
    (SEASON, "Meet me in Summer..", "Meet me in ***.."),
    (SEASON, "Meet me in Summer...", "Meet me in ***..."),
    (SEASON, "Meet me in Summer\u2026", "Meet me in ***\u2026"),
    (CUT, f"value {CUT[:8]}...", "value ***..."),
    (CUT, f"value {CUT[:8]}\u2026", "value ***\u2026"),
    (CUT, f"value {CUT[:8]}..", "value ***.."),
], ids=["full-stop", "comma", "exclamation", "question", "two-dots", "ellipsis",
        "unicode-ellipsis", "token-ellipsis", "token-unicode-ellipsis", "token-two-dots"])
def test_one_full_stop_after_a_secrets_start_ends_a_sentence_not_a_secret_cut_short(
        monkeypatch, secret, text, shown):
    """Let go as output ended, ``Meet me in Summer.`` of a secret ``Summer2024!`` showed
    as ``Meet me in ***.``: one dot was taken for an ellipsis begun, cutting the secret
    short, though the same line with its newline (a step's log line too) showed as
    written. One full stop, like a comma, ends a sentence; ``..``, ``...`` and ``…``
    still cut a secret short, whether the text comes whole or a character at a time."""
    from dagnb.executors import capture

    mask = Masker([secret], words_below=MIN_LINE)
    monkeypatch.setattr(capture, "_masks", (mask,))
    for size in (len(text), 1, 2, 3):
        out = io.StringIO()
        echo = capture._HeldEcho(out)
        for piece in _chunks(text, size):
            echo.write(piece)
        echo.release()
        assert out.getvalue() == shown, size
    # a whole line (a step's log line) shows the same, but for `..` ending it: only
    # let go last is an ellipsis begun taken for one
    if not (text.endswith("..") and not text.endswith("...")):
        assert mask(text + "\n") == shown + "\n"


def test_what_a_thread_holds_back_is_let_go_masked_as_its_cell_ends(workdir, monkeypatch,
                                                                     capsys):
    """A notebook lets go of what its own thread holds back as each cell ends
    (IPython's post_execute: :func:`release_held`), not of another thread's."""
    import threading

    from dagnb.executors.capture import release_held

    monkeypatch.setenv("API_TOKEN", TOKEN)
    started, done = threading.Event(), threading.Event()

    def step() -> int:
        started.set()
        done.wait(30)
        return 1

    graph = Graph("s", [Step("step", func=step, secrets=("API_TOKEN",))])
    background = threading.Thread(target=lambda: graph.run(executor="local", cache=False))
    background.start()
    try:
        assert started.wait(30)
        other = threading.Thread(target=lambda: print("thread", TOKEN[:5], end=""))
        other.start()
        other.join()
        print("cell", TOKEN[:6], end="", flush=True)
        release_held()
        assert capsys.readouterr().out == "thread cell ***"
    finally:
        done.set()
        background.join(30)
    assert capsys.readouterr().out == "***"  # (the thread's, as the run ends)


def test_what_is_held_back_as_the_interpreter_exits_is_shown_masked(tmp_path):
    """A script's last partial line, printed while a run in a daemon thread goes on,
    was held back and lost at exit; now it is let go, a secret's start masked."""
    import os
    import subprocess

    (tmp_path / "last.py").write_text(
        "import os, threading\nimport dagnb\n"
        "started = threading.Event()\n"
        "def step():\n    started.set()\n    threading.Event().wait()\n"
        "graph = dagnb.Graph('s', [dagnb.Step('step', func=step, secrets=('TOKEN',))])\n"
        "threading.Thread(target=lambda: graph.run(executor='local', cache=False),\n"
        "                 daemon=True).start()\n"
        "started.wait(30)\n"
        "print('bye', os.environ['TOKEN'][:6], end='')\n")
    done = subprocess.run([sys.executable, "last.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "TOKEN": TOKEN,
                                                      "DAGNB_CONFIG": "none"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("bye ***"), done.stdout


def test_a_one_character_secret_masks_the_steps_words_not_dagnbs(workdir, monkeypatch):
    """A short secret is masked in what a step prints (README), but a run's own words
    around it are not the step's: ``exit code 1`` stays, as the exit_code column says."""
    monkeypatch.setenv("RETRIES", "1")
    graph = Graph("s", [
        Step("fails", secrets=("RETRIES",), run='echo "tried $RETRIES time" >&2; exit 1'),
        Step("slow", secrets=("RETRIES",), run="sleep 5", timeout=0.1),
    ])
    status = graph.run(executor="local", cache=False).status().set_index("step")
    assert status.loc["fails", "error"] == "exit code 1: tried *** time"
    assert status.loc["slow", "error"] == (
        "step 'slow' ran past its timeout of 0.1 s and was stopped")


def test_the_registry_token_the_settings_name_is_masked_though_not_withheld(
        workdir, monkeypatch):
    """No step declares ``container_credentials``' token, but a local step has it in
    its environment: ``env`` printed it into the logs and the cache in clear."""
    import dagnb

    token = "ghp_registry-TOKEN-424242"
    monkeypatch.setenv("GHCR_TOKEN", token)
    dagnb.configure(container_credentials={"username": "me", "token_env": "GHCR_TOKEN"})
    step = Step("debug", run='test -n "$GHCR_TOKEN"; env | grep ^GHCR_TOKEN=')
    run = Graph("s", [step]).run(executor="local")
    assert run.logs("debug")["line"].tolist() == ["GHCR_TOKEN=***"]  # (seen, as before)
    cache = workdir / ".dagnb_cache"
    stored = [p for p in cache.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert stored == []


def test_a_secret_url_encoded_in_a_path_is_masked(workdir, monkeypatch):
    """``quote()`` keeps ``/`` by default (a URL path's spelling): a key with a ``/``
    and a ``+``, as AWS secret keys have, was masked in a query string, not in a path."""
    key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key)

    def sign() -> None:
        import os
        import urllib.parse

        print("GET /keys/" + urllib.parse.quote(os.environ["AWS_SECRET_ACCESS_KEY"]))

    step = Step("sign", func=sign, secrets=("AWS_SECRET_ACCESS_KEY",))
    run = Graph("s", [step]).run(executor="local", cache=False)
    assert run.logs("sign")["line"].tolist() == ["GET /keys/***"]


def test_a_long_secret_shown_cut_short_is_masked(workdir, monkeypatch):
    """pandas cuts a cell at 50 characters and reprlib a string in the middle: what they
    showed of a long token (its first 47 characters, its head and tail) was no whole
    secret, so nothing masked it."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhZG1pbiJ9.k1Jv9xQp7sT2mN4b"
    monkeypatch.setenv("API_JWT", token)

    def show() -> None:
        import os
        import reprlib

        import pandas as pd

        print(pd.DataFrame({"user": ["alice"], "token": [os.environ["API_JWT"]]}))
        print(reprlib.repr(os.environ["API_JWT"]), "wait...", "eyJhb...")

    run = Graph("s", [Step("show", func=show, secrets=("API_JWT",))]).run(
        executor="local", cache=False)
    lines = run.logs("show")["line"].tolist()
    assert lines[1].split() == ["0", "alice", "***..."]
    assert lines[2] == "'***...***' wait... eyJhb..."  # (a piece under 6 characters stays)


def test_a_secret_cut_short_after_a_whole_copy_in_one_word_is_masked(workdir, monkeypatch):
    """A head cut short was looked for from the first place the word began as the secret
    does: a whole copy before it there (a URL holding the token twice, cut by pandas at
    50 characters) began a match that was no head, and the copy's head was shown, stored
    in the step's logs in the cache."""
    token = "tok-9f8e7d6c5b4a3210fedcba9876"  # (30: pandas shows 11 of a second copy)
    monkeypatch.setenv("API_TOKEN", token)
    assert Masker([token])(f"?t={token}&r={token[:10]}...") == "?t=***&r=***..."

    def show() -> None:
        import os

        import pandas as pd

        print(pd.DataFrame({"url": [f"?t={os.environ['API_TOKEN']}&r={os.environ['API_TOKEN']}"]}))

    shell = 'echo "retry ?t=$API_TOKEN&r=${API_TOKEN:0:12}..."'
    run = Graph("s", [Step("show", func=show, secrets=("API_TOKEN",)),
                      Step("sh", run=shell, secrets=("API_TOKEN",))]).run(executor="local")
    lines = [line for step in ("show", "sh") for line in run.logs(step)["line"]]
    assert lines[1].split() == ["0", "?t=***&r=***..."]
    assert lines[2] == "retry ?t=***&r=***..."
    head = token[:MIN_LINE].encode()
    stored = [p for p in (workdir / ".dagnb_cache").rglob("*") if p.is_file()
              and head in p.read_bytes()]
    assert stored == []


@pytest.mark.parametrize("boundary", [1, 2])
def test_a_secret_across_the_searchs_pieces_keeps_a_result_out_of_the_cache(
        workdir, monkeypatch, boundary):
    """A result is searched a piece at a time as it is pickled: a secret cut by two
    pieces (here, an array's data cut at a MiB) is found all the same."""
    from dagnb.runtime.leaks import _CHUNK

    secret = "zz-TOPSECRET-42-abcdef"
    monkeypatch.setenv("MYTOKEN", secret)

    def make():
        import os

        import numpy as np

        data = np.zeros(3 * _CHUNK, dtype=np.uint8)
        at = boundary * _CHUNK - 7
        data[at:at + len(secret)] = np.frombuffer(os.environ["MYTOKEN"].encode(), np.uint8)
        return data

    graph = Graph("s", [Step("make", func=make, secrets=("MYTOKEN",))])
    with pytest.warns(UserWarning, match="'make'.* hold the value of secret 'MYTOKEN'"):
        run = graph.run(executor="local")
    assert run.states() == {"make": "succeeded"} and "make" in run.not_stored
    assert len(run.result("make")) == 3 * _CHUNK


# A fresh process runs a step returning a 32 MB array, cache on, a secret declared, and
# prints its peak of traced memory over the array's size.
_SEARCH_PEAK = """
import os, sys, tracemalloc
import numpy as np
import dagnb
from dagnb import Graph, Step

def make():
    return np.random.default_rng(0).integers(0, 255, 32_000_000, dtype=np.uint8)

os.environ["MYTOKEN"] = "zz-TOPSECRET-42-abcdef"
dagnb.configure(cache_directory=sys.argv[1])
Graph("warm", [Step("one", func=lambda: 1)]).run(executor="local").raise_for_status()
tracemalloc.start()
graph = Graph("big", [Step("make", func=make, secrets=("MYTOKEN",))])
graph.run(executor="local").raise_for_status()
print(round(tracemalloc.get_traced_memory()[1] / 32_000_000, 2))
"""


def test_searching_a_large_result_for_secrets_costs_no_copy_of_it(tmp_path):
    """The result was pickled whole in memory to be searched: a 100 MB array cost 250 MB
    at the peak when a secret was declared, and 100 MB when none was."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SEARCH_PEAK, str(tmp_path / "cache")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout) < 1.2, done.stdout  # the array itself: 1.0 (2.5 before)


def test_a_param_holding_a_secret_is_refused_before_any_step_runs(workdir, monkeypatch):
    """A param is written in clear to the step's params file (in the cache folder's
    ``.runs``) and shown in its key's description: one holding a secret's value, the
    step's own or another step's (here in JSON, inside a header), is refused."""
    import os

    from dagnb.errors import InvalidStepError

    monkeypatch.setenv("TOK", "tok-9876543210-abc")
    monkeypatch.setenv("OTHER", "other-5555-secret")
    monkeypatch.setenv("MODE", "dev")
    first = Step("first", run="touch ran")
    deploy = Step("deploy", run='echo "$DAGNB_PARAM_TOKEN"', needs=["first"],
                  params={"token": os.environ["TOK"]}, secrets=["TOK"])
    call = Step("call", func=lambda: None, secrets=["MODE"],
                params={"mode": "dev", "headers": {"Authorization": "Bearer other-5555-secret"}})
    for step, param, secret in ((deploy, "token", "TOK"), (call, "headers", "OTHER")):
        graph = Graph("s", [first, step, Step("uses", run="true", secrets=["OTHER"])])
        with pytest.raises(InvalidStepError) as caught:
            graph.run(executor="local")
        assert str(caught.value) == (
            f"step {step.name!r}: param {param!r} holds the value of secret {secret!r}, which "
            "would be written in clear to the step's params file in the cache folder; read "
            f"the secret from the environment inside the step instead (os.environ[{secret!r}]"
            f' in a function, "${secret}" in a command), with {secret!r} in its secrets')
    assert not (workdir / "ran").exists() and not (workdir / ".dagnb_cache").exists()
    # a secret under 6 characters is not refused ('dev' is too common), but a param holding
    # it as a value or word is warned of, once, naming the param and the secret only: the
    # params file keeps it in clear
    short = Graph("s", [Step("call", func=lambda: None, secrets=["MODE"],
                             params={"mode": "dev", "note": "devices", "list": ["x", "dev"]})])
    with pytest.warns(UserWarning) as caught:
        assert short.run(executor="local").states() == {"call": "succeeded"}
    said = [str(w.message) for w in caught if "holds the value" in str(w.message)]
    assert said == [
        f"step 'call': param {param!r} holds the value of secret 'MODE' (under 6 characters: "
        "not refused, as so short a value is common in params), which is written in clear to the "
        "step's params file in the cache folder; if it is the secret, read it from the "
        "environment inside the step instead (os.environ['MODE'] in a function, \"$MODE\" "
        "in a command)" for param in ("mode", "list")]
    # at the line that ran the graph, not one of dagnb's (a fixed stacklevel named one)
    assert {w.filename for w in caught if "holds the value" in str(w.message)} == {__file__}


HTML_TOKEN = "tok&<9876>\"543'210"  # (a generated password: HTML escapes five of these)


def _html_forms(secret: str) -> list[str]:
    """The secret as HTML shows it: html.escape's, pandas' table's (quotes kept),
    markupsafe's (Jinja2), an attribute's (saxutils.quoteattr)."""
    escaped = html.escape(secret, quote=False)
    return [html.escape(secret), escaped,
            escaped.replace('"', "&#34;").replace("'", "&#39;"), escaped.replace('"', "&quot;")]


def test_a_secret_shown_in_html_is_masked(workdir, monkeypatch):
    """``display(HTML(html.escape(token)))``, a DataFrame holding it (its table escapes
    ``&``, ``<`` and ``>``) or a print of the escaped token showed it in clear: the
    displays the run publishes and the cache entry replays, the logs and the cache."""
    monkeypatch.setenv("HTML_TOKEN", HTML_TOKEN)
    graph = Graph("rich")

    @graph.step(secrets=("HTML_TOKEN",))
    def report():
        import html
        import os
        import xml.sax.saxutils

        import pandas as pd

        from dagnb.executors.capture import step_display

        token = os.environ["HTML_TOKEN"]
        print(html.escape(token), html.escape(token, quote=False))
        return [step_display({"text/html": f"<b>{html.escape(token)}</b>"}, {}),
                step_display({"text/html": pd.DataFrame({"t": [token]})._repr_html_()}, {}),
                step_display({"text/html": f"<a title={xml.sax.saxutils.quoteattr(token)}>"},
                             {})]

    published = graph.run(executor="local").result("report")
    again = graph.run(executor="local")
    assert again.states() == {"report": "cached"}
    replayed = [e.data["data"]["text/html"] for e in again.events if e.kind == "display"]
    shown = [data["text/html"] for data, _ in published]
    assert shown == replayed and shown[0] == "<b>***</b>" and shown[2] == "<a title=\"***\">"
    assert "<td>***</td>" in shown[1]
    assert again.logs("report")["line"].tolist() == ["*** ***"]
    stored = [p.read_bytes() for p in workdir.rglob("*") if p.is_file()]
    assert any(b"<b>***</b>" in data for data in stored)  # (displays.jsonl)
    leaked = [form for form in [HTML_TOKEN, *_html_forms(HTML_TOKEN), "9876&gt;"]
              if any(form in text for text in shown + again.logs()["line"].tolist())
              or any(form.encode() in data for data in stored)]
    assert leaked == []


def test_html_forms_of_a_secret_are_masked_and_its_markup_kept(workdir, monkeypatch):
    """Each spelling is masked; a short secret is masked in HTML's text but not inside
    a character reference (``&#39;`` is one character), which a plain line keeps as it
    is; a long one cut short by a DataFrame's table (escaped after the cut) is masked."""
    from dagnb.executors.capture import step_display

    monkeypatch.setenv("DIGIT", "9")
    step = Step("quote", secrets=("DIGIT",),
                func=lambda: step_display({"text/html": "<i>it&#39;s 9</i>"}, {}))
    published = Graph("s", [step]).run(executor="local").result("quote")
    assert published == ({"text/html": "<i>it&#39;s ***</i>"}, {})
    masker = Masker([HTML_TOKEN])
    assert [masker(form) for form in _html_forms(HTML_TOKEN)] == ["***"] * 4
    short = Masker(["9", "'", "amp"])
    assert short.html("it&#39;s 9 &amp; &#x27; a'b &bogus9;") == (
        "it***s *** &amp; *** a***b &bogus***;")
    assert Masker(["9"])("&#39;") == "&#3***;"  # (a plain line: the step's words, masked)
    long = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJh&<bGljZSIsInJvbGUiOiJhZG1pbiJ9.k1Jv9xQp7sT2mN4b"
    import pandas as pd

    table = pd.DataFrame({"t": [long]})._repr_html_()
    assert "<td>eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJh&amp;&lt;bGljZSIsInJ...</td>" in table
    assert "<td>***...</td>" in Masker([long]).html(table)


def test_an_env_value_holding_a_secret_is_warned_of_and_a_word_or_line_of_it_is_not(
        workdir, monkeypatch) -> None:
    """An env value counts in the step's key (as a digest) and reaches a Dagger engine as
    a plain variable: one holding a secret's value as a word of its own (here inside a
    header) is warned of, once, naming the variable and the secret, never the value. A
    warning, not a refusal: a dev database's user may be its password too. A longer word
    holding it (postgresql:// for a password 'postgres') or a line a multi-line secret
    shares with other certificates is no warning."""
    monkeypatch.setenv("TOK", "tok-9876543210-abc")
    call = Step("call", run='test -n "$AUTH"', secrets=["TOK"],
                env={"AUTH": "Bearer tok-9876543210-abc"})
    with pytest.warns(UserWarning) as caught:
        run = Graph("s", [call]).run(executor="local")
    assert run.states() == {"call": "succeeded"}
    said = [str(w.message) for w in caught if "holds the value" in str(w.message)]
    assert said == [
        "step 'call': env 'AUTH' holds the value of secret 'TOK': it counts in the "
        "step's cache key and reaches a container as a plain variable, not a secret; if it "
        "is one, declare AUTH under the step's secrets (set in the environment), or build "
        "it in the step from $TOK"]
    assert {w.filename for w in caught if "holds the value" in str(w.message)} == {__file__}
    pem = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3\n" \
          "-----END CERTIFICATE-----"
    monkeypatch.setenv("PGPASSWORD", "postgres")
    monkeypatch.setenv("CLIENT_PEM", pem)
    other = "-----BEGIN CERTIFICATE-----\nMIIBxDCCAWqgAwIBAgIUQ\n-----END CERTIFICATE-----"
    fine = Step("fine", run="true", secrets=["PGPASSWORD", "CLIENT_PEM"],
                env={"DATABASE_URL": "postgresql://reader@db/app", "CA_CERT": other})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Graph("s", [fine]).run(executor="local").states() == {"fine": "succeeded"}
    # a secret under 6 characters is not looked for (as in params): 'dev' is too common
    monkeypatch.setenv("MODE", "dev")
    short = Step("short", run='test "$STAGE" = dev', env={"STAGE": "dev"}, secrets=["MODE"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Graph("s", [short]).run(executor="local").states() == {"short": "succeeded"}


def _describe(step: str) -> dict[str, str]:
    from dagnb.cache import store_for

    entry = store_for().newest(step)
    assert entry is not None
    return dict(entry.meta["describe"])


@pytest.mark.filterwarnings("ignore:step 'deploy'")  # (asserted once, at the first run)
def test_a_short_secret_is_masked_as_a_whole_value_or_word_in_the_cache_explain_and_plan(
        workdir, monkeypatch):
    """A secret under 6 characters (a PIN) was left out of the mask of descriptions: a
    param or env value holding it was kept in clear in the cache entry and shown by
    explain and plan. It is masked where it is a value or a word of its own, never inside
    a longer number (147112) or word."""
    monkeypatch.setenv("PIN", "4711")

    def graph(build: int) -> Graph:
        return Graph("s", [Step("deploy", run='test "$DAGNB_PARAM_PIN" = "$PIN"',
                                secrets=["PIN"], env={"HINT": "pin 4711 or 147112"},
                                params={"pin": "4711", "build": build, "note": "pin=4711"})])

    with pytest.warns(UserWarning, match="param 'pin' holds the value of secret 'PIN'"):
        assert graph(147112).run(executor="local").states() == {"deploy": "succeeded"}
    described = _describe("deploy")
    assert described["env"] == '{"HINT":"pin *** or 147112"}'
    assert described["params"] == '{"build":147112,"note":"pin=***","pin":"***"}'
    changed = ("params changed: {'build': 147112, 'note': 'pin=***', 'pin': '***'} → "
               "{'build': 147113, 'note': 'pin=***', 'pin': '***'}")
    assert graph(147113).explain("deploy") == [changed]
    assert list(graph(147113).plan()["reason"]) == [changed]
    stored = [p for p in (workdir / ".dagnb_cache").rglob("*")
              if p.is_file() and ".runs" not in p.parts  # (the step's params file: its input)
              and any(form in p.read_bytes() for form in (b'"4711', b"=4711", b"pin 4711"))]
    assert stored == []


def test_a_short_secret_a_steps_thread_prints_is_masked_as_a_word_not_inside_one(
        workdir, monkeypatch, capsys):
    """What a step's thread prints passes through the run's mask of output outside
    steps, which left a secret under 6 characters in clear."""
    monkeypatch.setenv("PIN", "4711")

    def unlock() -> int:
        import os
        import threading

        thread = threading.Thread(
            target=print, args=(f"pin={os.environ['PIN']} build 147112 (4711)",))
        thread.start()
        thread.join()
        return 1

    run = Graph("s", [Step("unlock", func=unlock, secrets=("PIN",))]).run(
        executor="local", cache=False)
    assert run.result("unlock") == 1
    assert "pin=*** build 147112 (***)" in capsys.readouterr().out


def test_writelines_is_captured_and_masked(workdir, monkeypatch, capsys):
    """``sys.stdout.writelines`` went around the routing stream: a step's lines written
    so reached neither its log nor the mask, and a secret among them was shown in clear,
    by the step and by a thread it started."""
    import sys
    import threading

    monkeypatch.setenv("API_TOKEN", "tok-LINES-5551234")

    def step() -> int:
        import os

        sys.stdout.writelines(["lines ", os.environ["API_TOKEN"], "\n"])
        thread = threading.Thread(target=lambda: sys.stdout.writelines(
            ["thread ", os.environ["API_TOKEN"], "\n"]))
        thread.start()
        thread.join()
        return 1

    run = Graph("s", [Step("step", func=step, secrets=["API_TOKEN"])]).run(
        executor="local", cache=False)
    assert list(run.logs("step")["line"]) == ["lines ***"]
    assert capsys.readouterr().out == "thread ***\n"


def test_a_secret_holding_an_ellipsis_is_masked_whole(workdir, monkeypatch):
    """A secret cut short is masked first (its head before an ellipsis, its tail after
    one): a secret holding an ellipsis itself, printed whole, had its head or tail masked
    as if cut, and the rest was kept in clear in the logs and the cache."""
    from dagnb.model.masking import MIN_LINE

    for secret in ("x9Kq2...mZp7Lw", "Tr0ub4dor...&3xyz", "s3cr3tpass\u2026word"):
        for mask in (Masker([secret]), Masker([secret], words_below=MIN_LINE)):
            assert mask(f"password={secret}") == "password=***"
            assert mask.html(f"<td>{html.escape(secret)}</td>") == "<td>***</td>"
    monkeypatch.setenv("TOKEN", "x9Kq2...mZp7Lw")

    def python_step() -> int:
        import os
        print("token is", os.environ["TOKEN"])
        return 1

    run = Graph("s", [Step("sh", run='echo "connecting with $TOKEN"', secrets=["TOKEN"]),
                      Step("py", func=python_step, secrets=["TOKEN"])]).run(executor="local")
    lines = [line for step in ("sh", "py") for line in run.logs(step)["line"]]
    assert lines == ["connecting with ***", "token is ***"]
    stored = [p for p in (workdir / ".dagnb_cache").rglob("*") if p.is_file()
              and any(part in p.read_bytes() for part in (b"x9Kq2", b"mZp7Lw"))]
    assert stored == []


def test_a_short_secret_is_masked_whole_not_inside_longer_words_or_numbers():
    """The mask of descriptions: a secret under ``MIN_LINE`` characters is masked where
    nothing alphanumeric touches it; a longer one wherever it is, as before."""
    from dagnb.model.masking import MIN_LINE

    mask = Masker(["4711", "a", "tok-9876543210"], words_below=MIN_LINE)
    assert mask("4711 pin=4711 \"4711\" '4711' [4711] a") == (
        "*** pin=*** \"***\" '***' [***] ***")
    assert mask("147112 4711x x4711 alpha banana a_b") == (
        "147112 4711x x4711 alpha banana ***_b")
    assert mask("xtok-9876543210x 4711") == "x***x ***"
    assert Masker(["4711"])("147112") == "1***2"  # (a run's mask of a step's output)
    # a secret's own punctuation at its edge is an edge, whatever touches it; but a
    # secret of punctuation alone is still masked only where it stands alone
    edges = Masker(["#4711", "dev", "."], words_below=MIN_LINE)
    assert edges("x#4711 host=dev.1 a.b . c") == "x*** host=***.1 a.b *** c"


def test_a_short_secret_after_an_escape_is_masked_and_not_inside_a_decimal_number():
    """A description is repr or JSON text: the ``n`` of ``\\n`` (or a URL's ``%20``) is
    no letter touching the secret, which was stored in clear after one; and a decimal
    point with a digit beyond makes one number (``3.4711`` was ``3.***``)."""
    from dagnb.model.masking import MIN_LINE

    mask = Masker(["4711", "1"], words_below=MIN_LINE)
    assert mask("'pins:\\n4711' 'a\\t4711' q=a%204711 '\\x0b4711' \"\\u00e94711\"") == (
        "'pins:\\n***' 'a\\t***' q=a%20*** '\\x0b***' \"\\u00e9***\"")
    assert mask("3.4711 4711.25 '2.4711.0' 0.1 1.5 10.0.0.1 -1 (4711.)") == (
        "3.4711 4711.25 '2.4711.0' 0.1 1.5 10.0.0.1 -*** (***.)")


def test_a_short_secret_does_not_break_the_cut_short_form_of_another():
    """``admin`` masked first turned ``admin-S3cr3t-...`` (a pandas cell cut short) into
    ``***-S3cr3t-...``, which no longer starts as the password does: the rest of it was
    shown. The cut-short form is looked for first, by the run's mask too."""
    from dagnb.model.masking import MIN_LINE

    password = "admin-S3cr3t-P4ssw0rd-for-the-warehouse-2024-xyz"
    shown = f"dsn {password[:30]}... and {password[:12]}\u2026"
    for mask in (Masker(["admin", password], words_below=MIN_LINE), Masker(["admin", password])):
        assert mask(shown) == "dsn ***... and ***\u2026"
        assert mask.html(f"<td>{password[:30]}...</td>") == "<td>***...</td>"


def test_html_shown_outside_steps_keeps_character_references_whole():
    """A display published outside any step while a run masks (a thread a step started)
    went through the text mask, which broke ``&#39;`` for a secret ``39`` (``&#***;``)."""
    from dagnb.executors import capture
    from dagnb.model.masking import MIN_LINE
    from dagnb.runtime.displays import masked_bundle

    mask = Masker(["39", "tok-9876543210"], words_below=MIN_LINE)
    with capture.capturing(mask):
        bundle = masked_bundle({"text/html": "<td>it&#39;s</td><td>tok-9876543210 39</td>"},
                               {}, capture.outside_mask())
    assert bundle == ({"text/html": "<td>it&#39;s</td><td>*** ***</td>"}, {})


def _numeric_references(secret: str, hexadecimal: bool) -> str:
    """The secret as an HTML writer that spells characters as numbers writes it: every
    character but letters and digits (``&#38;`` or ``&#x26;`` for ``&``)."""
    return "".join(char if char.isalnum() else f"&#x{ord(char):x};" if hexadecimal
                   else f"&#{ord(char)};" for char in secret)


def test_a_secret_spelled_with_numeric_html_references_is_masked_and_references_kept_whole(
        workdir, monkeypatch):
    """``html.escape`` writes ``&amp;``, but other writers (ElementTree with an ASCII
    encoding, xmlcharrefreplace, template engines) spell characters as ``&#38;`` or
    ``&#x26;``: such a display showed the secret in clear."""
    from dagnb.executors.capture import step_display

    monkeypatch.setenv("HTML_TOKEN", HTML_TOKEN)
    monkeypatch.setenv("PASS", "p&ss")
    forms = [_numeric_references(secret, hexadecimal)
             for secret in (HTML_TOKEN, "p&ss") for hexadecimal in (True, False)]
    forms.append(html.escape(HTML_TOKEN, quote=False).replace('"', "&#34;").replace("'", "&#X27;"))
    page = "".join(f"<td>{form}</td>" for form in forms)
    step = Step("page", secrets=("HTML_TOKEN", "PASS"),
                func=lambda: step_display({"text/html": page}, {}))
    graph = Graph("s", [step])
    published = graph.run(executor="local").result("page")
    assert published == ({"text/html": "<td>***</td>" * len(forms)}, {})
    again = graph.run(executor="local")
    assert [e.data["data"]["text/html"] for e in again.events if e.kind == "display"] == [
        published[0]["text/html"]]
    mask = Masker(["p&ss", "\u00f6", "'"])
    assert mask.html("p&#x26;ss p&#38;ss p&#0038;ss p&AMP;ss it&#39;s &#246; &#xF6;\u00f6") == (
        "*** *** *** *** it***s *** ******")
    assert Masker(["9"]).html("&#39; 19 &#x2019;") == "&#39; 1*** &#x2019;"
    words = Masker(["p&ss"], words_below=6)  # (the mask of descriptions: words only)
    assert words.html("<td>p&#38;ss</td> xp&#38;ss") == "<td>***</td> xp&#38;ss"


class _LeftRunning:
    """A step that starts a thread which calls ``then(token)`` once :meth:`finish` is
    called, its run over."""

    def __init__(self, then: Callable[[str], object]) -> None:
        import threading

        self.then, self.go, self.thread = then, threading.Event(), None

    def __call__(self) -> int:
        import os
        import threading

        token = os.environ["API_TOKEN"]
        self.thread = threading.Thread(target=lambda: (self.go.wait(10), self.then(token)))
        self.thread.start()
        return 1

    def finish(self) -> None:
        assert self.thread is not None and self.thread.is_alive()  # (it outlived the run)
        self.go.set()
        self.thread.join()


def _capture_released() -> bool:
    from dagnb.executors.capture import _RoutingStream

    return not isinstance(sys.stdout, _RoutingStream)


def test_a_thread_a_step_leaves_running_keeps_the_secret_out_of_a_memory_cache_after_the_run(
        workdir, monkeypatch):
    """The run's secrets were known to the cache only while it lasted: a thread the step
    left running, calling a dagnb.Memory function after the run, wrote the secret in
    clear (its argument's description, its result) into the cache folder. The process
    keeps knowing every secret a run was given: the result is returned uncached, with a
    warning naming the secret and what to do, never its value."""
    from dagnb.testing import wait_until

    secret = "sk-live-9z8y7x6w5v4u"
    monkeypatch.setenv("API_TOKEN", secret)
    memory = dagnb.Memory(workdir / "memory")

    @memory.cache
    def session(token: str) -> dict[str, str]:
        return {"auth": "Bearer " + token}

    @memory.cache
    def size(token: str) -> int:
        return len(token)

    step = _LeftRunning(lambda token: (session(token), size(token)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = Graph("s", [Step("start", func=step, secrets=("API_TOKEN",))]).run(
            executor="local")
        assert run.ok
        step.finish()
    assert _files_holding(workdir / "memory", secret) == []
    said = [str(w.message) for w in caught]
    assert any(re.fullmatch(
        r".*session: the call ran but was not cached: its result holds the value of secret "
        r"'API_TOKEN' \(given to a run of this process, it stays known until the process "
        r"ends or dagnb.cache.forget_secrets\(\)\), and the cache keeps no secret; return "
        r"a result without the secret to cache it", line) for line in said), said
    assert all(secret not in line for line in said)
    assert size.check_call_in_cache(secret)  # (stored: its description masked)
    assert _files_holding(workdir / "memory", secret) == []
    assert _files_holding(workdir / ".dagnb_cache", secret) == []
    assert wait_until(_capture_released, timeout=5)


def test_a_thread_a_step_leaves_running_does_not_keep_the_capture_after_the_run(
        workdir, monkeypatch):
    """Keeping dagnb's stand-in for sys.stdout, and the run's mask, until such threads
    end kept them for good where a library's threads never end (dask's pools, a client's
    IO loop): every later print of the process masked, one mask more per run. The
    streams are put back as the run ends (what such a thread prints after it goes out as
    it is: README), and a dagnb.Memory call there still keeps the secret out."""
    monkeypatch.setenv("API_TOKEN", "tok-AFTER-7771234")
    steps = [_LeftRunning(lambda token: None) for _ in range(3)]
    for number, step in enumerate(steps):
        Graph(f"g{number}", [Step("start", func=step, secrets=("API_TOKEN",))]).run(
            executor="local", cache=False)
        assert _capture_released()
    from dagnb.executors import capture

    assert capture._masks == ()
    for step in steps:
        step.finish()


def test_a_later_unrelated_run_neither_refuses_nor_masks_an_earlier_runs_secret(
        workdir, monkeypatch):
    """A secret one run was given (a database password ``postgres``) was refused in
    every later graph's params and masked in its logs, a graph that never declared it:
    ``postgresql://db/sales`` could not be passed, and nothing but a restart undid it.
    Later runs mask and refuse their own graph's secrets only; a dagnb.Memory call
    outside a run still keeps the remembered value out of its cache."""
    monkeypatch.setenv("PGPASSWORD", "postgres")
    Graph("a", [Step("a", func=lambda: 1, secrets=("PGPASSWORD",))]).run(executor="local")
    dsn = "postgresql://db.internal:5432/sales"
    run = Graph("b", [Step("load", func=lambda dsn: print(dsn) or len(dsn),
                           params={"dsn": dsn})]).run(executor="local")
    assert run.ok and run.logs("load")["line"].tolist() == [dsn]
    memory = dagnb.Memory(workdir / "memory")
    cached = memory.cache(lambda text: text + "?sslmode=require")
    with pytest.warns(UserWarning, match=r"secret 'PGPASSWORD' \(given to a run of this "
                                         r"process.*dagnb\.cache\.forget_secrets\(\)\)"):
        cached(dsn)
    assert not cached.check_call_in_cache(dsn)
    dagnb.cache.forget_secrets()
    cached(dsn)
    assert cached.check_call_in_cache(dsn)


def test_a_memory_call_after_a_run_shows_its_arguments_masked(workdir, monkeypatch, capsys,
                                                              caplog):
    """A verbose dagnb.Memory function printed and logged its arguments in clear: a
    secret a run was given among them is masked there."""
    import logging

    secret = "sk-live-VERBOSE-1234"
    monkeypatch.setenv("API_TOKEN", secret)
    Graph("s", [Step("s", func=lambda: 1, secrets=("API_TOKEN",))]).run(executor="local")
    memory = dagnb.Memory(workdir / "memory", verbose=20)
    cached = memory.cache(len)
    with caplog.at_level(logging.INFO, logger="dagnb.memory"):
        assert cached(secret) == len(secret)
    shown = capsys.readouterr().out + caplog.text
    assert "***" in shown and secret not in shown


def test_the_process_keeps_each_value_of_a_rotated_secret_up_to_a_limit():
    from dagnb.cache import secret_scan

    secret_scan.remember_secrets({"TOKEN": "value-one-1"})
    secret_scan.remember_secrets({"TOKEN": "value-two-2", "OTHER": "other-value"})
    assert secret_scan.known_secrets() == {"TOKEN": "value-two-2", "OTHER": "other-value",
                                           "TOKEN (an earlier value)": "value-one-1"}
    found = secret_scan.secrets_in_force()
    assert found is not None and found.finder.find(b"..value-one-1..") == (
        "TOKEN (an earlier value)")
    for number in range(secret_scan._KNOWN_LIMIT):
        secret_scan.remember_secrets({"TOKEN": f"rotated-{number:04}"})
    assert "value-one-1" not in secret_scan.known_secrets().values()
    assert len(secret_scan.known_secrets()) == secret_scan._KNOWN_LIMIT


def test_a_secret_a_colour_code_splits_is_masked(workdir, monkeypatch):
    """`printf 'tok-9f8e\\033[0m7d6c...'`: the log kept the secret in two halves around a
    colour code, which a terminal shows as the whole token (a reviewer's find, in a
    failure tail). Such a line is masked without its colours; others keep theirs."""
    secret = "tok-9f8e7d6c5b4a"
    monkeypatch.setenv("API_TOKEN", secret)
    command = ("printf 'key %s\\033[0m%s end\\n' \"${API_TOKEN:0:8}\" \"${API_TOKEN:8}\"; "
               "printf '\\033[31mred\\033[0m\\n'")
    run = Graph("s", [Step("c", run=command, secrets=("API_TOKEN",))]).run(executor="local")
    lines = run.logs("c")["line"].tolist()
    assert lines == ["key *** end", "\x1b[31mred\x1b[0m"]
    assert _files_holding(workdir / ".dagnb_cache", secret[8:]) == []


def test_a_secret_set_but_empty_is_warned_of(monkeypatch):
    """``export API_TOKEN=$(cat missing-file)``: the step ran with an empty token, said
    nowhere (one not set at all is refused)."""
    monkeypatch.setenv("API_TOKEN", "")
    graph = Graph("s", [Step("call", run="true", secrets=("API_TOKEN",))])
    with pytest.warns(UserWarning, match=r"^step 'call': secret API_TOKEN is set but empty, "
                                         r"so the step gets an empty value; set API_TOKEN to "
                                         r"the secret"):
        assert graph.run(executor="local", cache=False).ok
