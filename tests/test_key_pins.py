"""Cache keys are persisted: the same inputs must give the very same digests forever.

The digests below were computed by dagnb's main (f0d3d67, key format ``dagnb-key-2``)
before key computation was made faster; any change to them invalidates every user's
cache, so it must come with a new ``CACHE_FORMAT``. The functions the steps run are
defined here, once, and must not be edited (their source is part of their keys).

The second half checks what keys memoize: a memo may only ever give the key a new
process would compute.
"""

from __future__ import annotations

import functools
import gc
import math
from pathlib import Path

import pytest
import xxhash

from dagnb import fingerprint
from dagnb.cache import CACHE_FORMAT, key_digest, keys, step_key
from dagnb.cache.call_keys import CallKeys
from dagnb.fingerprint import CHUNK_SIZE, path_digest, set_hash_algorithm, value_digest
from dagnb.model.step import Step

OFFSET = 3
SETTINGS = {"alpha": 1, "beta": [1, 2]}


def noop(*_args: object, **_kwargs: object) -> int:
    return 1


def value(i: int) -> int:
    return i * 2


def helper(x: int) -> int:
    return x + OFFSET


def work(a: int, b: int = 2) -> int:
    return helper(a) * b


def reads_settings(prep: int) -> int:
    return SETTINGS["alpha"] + prep


def small(x: int, name: str) -> int:
    return x + len(name)


def many(a, b=None, *rest, c=1, **more):
    return a


def version_of(step: Step) -> str:
    return "v1"


class Scaler:
    def scale(self, x: int) -> int:
        return x * OFFSET

    def __call__(self, x: int) -> int:
        return x + OFFSET


def steps() -> dict[str, tuple[Step, dict[str, str]]]:
    """Name -> (step, upstream digests)."""
    up = {"s0": "0" * 32}
    return {
        "shell": (Step("a", run="echo hi"), {}),
        "argv": (Step("a", run=["python", "-c", "print(1)"]), {}),
        "shell_full": (Step(
            "train", run="python train.py", image="python:3.11", env={"VAR": "1", "A": "x"},
            secrets=("TOKEN",), mounts={"data/raw.csv": "/in/raw.csv"},
            params={"n": 1, "f": 1.0, "t": True, "l": [1, "two"], "d": {"z": None}},
            workdir="/work", services=("db",), cache_volumes={"pip": "/root/.cache/pip"},
            exclude=("*.tmp",), user="1000:100", platform="linux/arm64", errexit=False,
            cache_version="7",
        ), {"prep": "a" * 32, "other": "b" * 32}),
        "noop_first": (Step("s0", func=noop), {}),
        "noop_chain": (Step("s1", func=noop, needs=("s0",)), up),
        "noop_chain_other_name": (Step("s2", func=noop, needs=("s1",)), {"s1": "1" * 32}),
        "value_params": (Step("s5", func=value, params={"i": 5}), {}),
        "value_params_unicode": (Step("s5", func=value, params={"i": "été ☃"}), {}),
        "helpers": (Step("w", func=work, params={"a": 1}), {}),
        "reads_global": (Step("r", func=reads_settings, needs=("prep",)),
                         {"prep": "c" * 32}),
        "key_fn": (Step("k", run="make", key_fn=version_of), {}),
        "key_fn_python": (Step("k", func=noop, key_fn=version_of), {}),
        "partial": (Step("p", func=functools.partial(work, b=3), params={"a": 2}), {}),
        "method": (Step("m", func=Scaler().scale, params={"x": 2}), {}),
        "callable_object": (Step("o", func=Scaler(), params={"x": 2}), {}),
    }


PINNED_STEPS = {
    "shell": "70b44aad68b3d67f1102533f4740b992",
    "argv": "b7c312e692149f3e48cf78db9298f8c9",
    "shell_full": "92a4ca6aebe339ef9fc35a21acae410b",
    "noop_first": "66bce55b7051df5551f7579225e62021",
    "noop_chain": "924e58394e622a50ffb3030dfa0cee6d",
    "noop_chain_other_name": "79cb9b3b0242609d8341fdff6d7a5749",
    "value_params": "c7cdca9f23c80b579f6283747d19bc04",
    "value_params_unicode": "91c17282d20ddb59635827f5be271848",
    "helpers": "f6d0cd5703e138a33f6604eb073d7e25",
    "reads_global": "2172b7a1f89e92127793761bf02e7437",
    "key_fn": "714990d0b426ae84185dbb1f64f7d766",
    "key_fn_python": "13dda9097c621e54242a11ebdf1c6f88",
    "partial": "38a1d95599966c007d3a6e94dc187a67",
    # (changed on purpose: the object a method is bound to, and a callable object,
    # count by content, a ``var:self`` component, and its class by its code: before,
    # Scaler(2).scale was Scaler(3).scale, and an edited class attribute was not seen;
    # changed again: a value holding an instance of the user's class counts the class's
    # code, so var:self does, as an argument built from a project's class does)
    "method": "7e64418cafba3e17141b9cfbb4c2c245",
    "callable_object": "3f0b52d563c516864d0b864ad7eef70e",
}

CALLS = {
    "small": (small, (1, "abc"), {}),
    "small_kwargs": (small, (), {"name": "abc", "x": -12345678901234567890}),
    "small_float": (small, (0.1, "é"), {}),
    "work_default": (work, (1,), {}),
    "work_tuple": (work, ((1, 2.5, "x", (None, True)),), {"b": False}),
    "many": (many, (1, 2, 3), {"c": b"raw", "d": [1.5, {"k": {1, 2}}]}),
}

PINNED_RUN_SALTED = {
    "shell": "4b5d61543a4df5b0ebe122fd322dcbd6",
    "argv": "4036c97d1370e43a0ace0b8511a8764a",
    "shell_full": "9b858db8b3145b5e72a79497ec1a7492",
    "noop_first": "db30b7fe5675b4eaca4b142313e2ae4b",
    "noop_chain": "35dc737cc758d2459c620eb1f7eb381a",
    "noop_chain_other_name": "f8ae02f3eaf5406732e2079509d57621",
    "value_params": "8f0917096deeae174dc850078f499e8e",
    "value_params_unicode": "ae58f375f0794d2bb457a5fd5033cec1",
    "helpers": "73f1d8b9f147443e6f54d2510c6a80e2",
    "reads_global": "bd163116a03e5fbc694797e2b1337101",
    "key_fn": "3f1319133e0e13af0cb0595180b09af5",
    "key_fn_python": "9999f3c19ee60cf3c8b8bc8698256563",
    "partial": "ae50682c235276b04f80c867cb39b3b5",
    "method": "9a18234e54d1220e277d3588b8cea527",  # (var:self: see PINNED_STEPS)
    "callable_object": "9e3416ed44ffe3a79449143baf3cfe2b",
}

PINNED_CALLS = {
    "small": "60a2d513932437812634e875ce69bc09",
    "small_kwargs": "e3f704c574f3d65a66117f8dcffe7ad6",
    "small_float": "918258476673c61f7ec6fda519471a0b",
    # (work's helper reads OFFSET: a var:OFFSET part since Memory hashes the globals a
    # function reads at each call, as steps do; a function that reads none kept its key)
    "work_default": "12192aa39f31979c809bd2c156289d56",
    "work_tuple": "10c3ddb955454cfbea594a03fb421355",
    "many": "e1051a649356b5f4a63456acb09c4ebd",
}

VALUES = {
    "int": 1,
    "zero": 0,
    "negative": -7,
    "big": 2**100,
    "true": True,
    "none": None,
    "float": 0.1,
    "minus_zero": -0.0,
    "nan": math.nan,
    "inf": math.inf,
    "str": "abc",
    "empty_str": "",
    "unicode": "été ☃ \U0001f600",
    "surrogate": "\udcff",
    "bytes": b"\x00\xff",
    "tuple": (1, "a", 2.0),
    "empty_tuple": (),
    "nested_tuple": ((1, 2), ("x",), ()),
    "list": [1, [2, (3,)]],
    "dict": {"b": 1, "a": (2, 3)},
    "set": {3, 1, 2},
    "frozenset": frozenset({"x", "y"}),
    "complex": 1 + 2j,
    "range": range(3),
    "dict_str": {"b": 1, "a": "x", "c": 2.5},
    "dict_int_keys": {2: "b", 1: "a"},
    "dict_nested": {"k": {"j": (1, [2])}, "l": [None]},
    "dict_empty": {},
    "dict_tuple_key": {(1, 2): 3},
    "dict_of_set": {"s": {1, 2}},
    "tuple_of_dicts": ({"a": 1}, {"a": 2}),
}

PINNED_VALUES = {
    "int": "c3d8523c272c18fb5f79164a38c7d984",
    "zero": "01a41b02c0179938ca8a72a37d855c3b",
    "negative": "eefebb6968bf57d42b4ef50bd0a8b3a1",
    "big": "9b8eace68d753933c014c6d025c448f4",
    "true": "1d33c0bd3511c80d20948828081ddcb4",
    "none": "626d368fe0e74b4f1a038927df1311d6",
    "float": "67e16bb2a22b77a8bc8edae175803a79",
    "minus_zero": "f6b43928ce5e5192820ab6b29963bd6b",
    "nan": "3ae82a08ba2149526bdaa8092bd62f35",
    "inf": "7a8db524dbae2e094b793d59b1f88687",
    "str": "ba81a507f5acb97373d1ec6a875e9719",
    "empty_str": "5c8eef17b21d97c28e748bb28b3d062b",
    "unicode": "7c645364bd7ca89b5d939b17c6fdff57",
    "surrogate": "e03797cad73dd80dccad88254cc3847f",
    "bytes": "470cf5e77c5eee6dacc381c23710529d",
    "tuple": "6dbb387779c7eaccc513ced8097e5839",
    "empty_tuple": "aa5cda2551d8a6a2bb2f8cd794352756",
    "nested_tuple": "4e941026f52e31ddf97f2402d7c3cda5",
    "list": "e4fa628b630fa219bdf71d445133975c",
    "dict": "a723e6e81ec6f2207dd911882937e9b5",
    "set": "cc622a9d133dee8217d1b8a0be50a1ba",
    "frozenset": "a493a6cc6dad252fdeecfb687888f7d1",
    "complex": "69a59b59aacf1413c6054d6238699b6c",
    "range": "567423998faa2838be9c5282a8ccbc8c",
    "dict_str": "59e515a8fee0cd60e8333adf9b9202fc",
    "dict_int_keys": "e0db143742c465fbae8c26ce58f30074",
    "dict_nested": "732e334e3d5179f32d71a8e71a6c30a7",
    "dict_empty": "776e4f1075e7179032d33b3a2e26d054",
    "dict_tuple_key": "c7870451dc95f5f8d4170f27318a4444",
    "dict_of_set": "5fb2f2889d9df0f177e6edd12f5007a2",
    "tuple_of_dicts": "76a1c15d38f02ddf00be5a857bb435aa",
}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.csv").write_text("a,b\n1,2\n")
    return tmp_path


def step_digests(base: Path, run_version: str = "") -> dict[str, str]:
    return {
        name: step_key(step, upstream_digests=up, base_dir=base,
                       cache_version=run_version).digest
        for name, (step, up) in steps().items()
    }


def call_digests() -> dict[str, str]:
    return {
        name: key_digest(CallKeys(func, ()).components(args, kwargs))
        for name, (func, args, kwargs) in CALLS.items()
    }


def test_the_key_format_is_unchanged():
    assert CACHE_FORMAT == "dagnb-key-2"


def test_step_keys_are_those_main_computed(base):
    assert step_digests(base) == PINNED_STEPS


def test_a_run_level_cache_version_gives_the_keys_main_computed(base):
    assert step_digests(base, "run-salt") == PINNED_RUN_SALTED
    assert step_digests(base) == PINNED_STEPS


def test_step_keys_are_the_same_when_computed_again(base):
    first = step_digests(base)
    assert step_digests(base) == first == PINNED_STEPS


def test_memory_call_keys_are_those_main_computed():
    assert call_digests() == PINNED_CALLS
    assert call_digests() == PINNED_CALLS  # again, from whatever was memoized


def test_value_digests_are_those_main_computed():
    assert {name: value_digest(v) for name, v in VALUES.items()} == PINNED_VALUES


def test_blake3_digests_are_those_main_computed(base):
    pytest.importorskip("blake3")
    set_hash_algorithm("blake3")
    try:
        found = {"value": value_digest(VALUES["tuple"]), "call": call_digests()["small"],
                 "step": step_digests(base)["noop_chain"]}
    finally:
        set_hash_algorithm("xxh3_128")
    assert found == PINNED_BLAKE3


PINNED_BLAKE3 = {
    "value": "7d23d5c1db46bfbcd4e9d3b56187294b1d2116274f04a3d28162b07a4fff6cdf",
    "call": "0875242af4f592ff41a8dd503cab6724b6f0834ef13e5cf2548b4db8a844c794",
    "step": "86c7bc321fc901b9f3f5e3d80882a516d1d3c743ca554b2424cf127f64754245",
}


# -------------------------------------------------------------------- what is memoized


def fresh_key(step: Step, base: Path, **options) -> str:
    """The key with every memo of dagnb.cache.keys emptied first, as a new process."""
    keys._forget_digests()
    return step_key(step, upstream_digests={}, base_dir=base, **options).digest


def test_params_equal_in_python_but_not_in_json_get_their_own_keys(base):
    variants = [{"n": 1}, {"n": True}, {"n": 1.0}, {"n": [1]}, {"n": [True]}]
    in_turn = [step_key(Step("a", run="x", params=params), upstream_digests={},
                        base_dir=base).digest for params in variants]
    assert len(set(in_turn)) == len(variants)
    assert in_turn == [fresh_key(Step("a", run="x", params=p), base) for p in variants]


def test_a_step_keyed_in_turn_with_others_gets_the_key_a_new_process_gives(base):
    variants = [
        dict(run="x"), dict(run="x", cache_version="1"), dict(run="x", cache_version=1),
        dict(run=["x"]), dict(run="x", env={"A": "1"}), dict(run="x", env={"A": 1}),
        dict(run="x", errexit=False), dict(run="x", user="1000"), dict(func=noop),
        dict(func=value), dict(run="x", key_fn=version_of), dict(func=noop, image="py"),
        dict(run="x", secrets=("A", "B")), dict(run="x", secrets=("B", "A")),
    ]
    for salt in ("", "1"):
        in_turn = [step_key(Step(f"s{i}", **fields), upstream_digests={}, base_dir=base,
                            cache_version=salt).digest for i, fields in enumerate(variants)]
        alone = [fresh_key(Step(f"s{i}", **fields), base, cache_version=salt)
                 for i, fields in enumerate(variants)]
        assert in_turn == alone
    assert len(set(in_turn)) == len(variants) - 2  # env 1 is "1"; secrets are a set


def test_nested_params_mutated_in_place_change_the_key(base):
    layers = [1, 2]
    step = Step("a", run="x", params={"layers": layers})
    before = step_key(step, upstream_digests={}, base_dir=base).digest
    layers.append(3)
    assert step_key(step, upstream_digests={}, base_dir=base).digest != before


def test_a_function_redefined_in_a_cell_changes_the_key_and_the_same_source_does_not(
    shell, base
):
    def key_of_cell(source: str) -> str:
        shell.run_cell(source)
        step = Step("f", func=shell.user_ns["f"])
        return step_key(step, upstream_digests={}, base_dir=base).digest

    first = key_of_cell("def f():\n    return 1\n")
    first_function = shell.user_ns["f"]
    assert key_of_cell("def f():\n    return 2\n") != first
    assert key_of_cell("def f():\n    return 1\n") == first
    assert shell.user_ns["f"] is not first_function


def test_a_helper_or_a_variable_redefined_in_a_cell_changes_the_key(shell, base):
    shell.run_cell("SCALE = 2\ndef helper(x):\n    return x\n"
                   "def f():\n    return helper(SCALE)\n")
    step = Step("f", func=shell.user_ns["f"])
    digests = [step_key(step, upstream_digests={}, base_dir=base).digest]
    for cell in ("SCALE = 3", "def helper(x):\n    return -x\n"):
        shell.run_cell(cell)
        digests.append(step_key(step, upstream_digests={}, base_dir=base).digest)
    assert len(set(digests)) == 3


def test_a_memory_call_key_follows_its_arguments_and_the_function_code(shell):
    shell.run_cell("def g(x, y=1):\n    return x\n")
    calls = CallKeys(shell.user_ns["g"], ())
    seen = {key_digest(calls.components(args, kwargs))
            for args, kwargs in [((1,), {}), ((1, 1), {}), ((), {"x": 1}), ((True,), {}),
                                 ((1.0,), {}), ((1, 2), {}), (("1",), {})]}
    assert len(seen) == 5  # the first three bind alike
    before = key_digest(calls.components((1,), {}))
    shell.run_cell("def g(x, y=1):\n    return y\n")
    assert key_digest(CallKeys(shell.user_ns["g"], ()).components((1,), {})) != before


def test_the_code_records_forget_a_function_and_never_serve_another_one():
    records = fingerprint._CODE_CACHE

    def short_lived():
        return 1

    def other():
        return 2

    digest = fingerprint.code_digest(short_lived)
    assert records.get(short_lived) is not None
    ident = id(short_lived)
    records.entries[id(other)] = records.entries[ident]  # as if the id were reused
    assert records.get(other) is None
    assert fingerprint.code_digest(other) != digest
    del short_lived
    gc.collect()
    assert ident not in records.entries


class IntSub(int):
    pass


class StrSub(str):
    pass


class FloatSub(float):
    pass


# Around the fast path's limits (4096 characters, 64 items, 8 levels) and outside it.
SMALL_VALUES = [
    0, -1, 2**70, "", "x" * 4096, "x" * 4097, "é\udcff", b"", b"y" * 5000, 0.0, -0.0,
    math.nan, math.inf, True, False, None, (), [], (1, "a", 2.5, None, True, b"b"),
    [(1,), [2, [3]]], tuple(range(64)), tuple(range(65)), ((((((((((1,),),),),),),),),),),
    (1, {"a": 1}), [1, {2}], (1, 2.5j), (1, IntSub(2)), StrSub("a"), (1, FloatSub(1.5)),
    {}, {"b": 1, "a": [2.5, "x"]}, {1: "a", "1": "b", 1.5: None}, {(1,): {"k": ()}},
    {f"k{i}": i for i in range(64)}, {f"k{i}": i for i in range(65)}, {"s": {1}},
    {StrSub("k"): 1}, {"k": IntSub(1)},
]



@pytest.mark.parametrize(("algorithm", "module"), [("xxh3_128", "xxhash"), ("blake3", "blake3")])
def test_small_values_hashed_in_one_piece_digest_as_when_fed_piece_by_piece(algorithm, module):
    pytest.importorskip(module)
    cyclic: list = [1]
    cyclic.append(cyclic)
    cyclic_dict: dict = {"a": 1}
    cyclic_dict["self"] = [cyclic_dict]
    set_hash_algorithm(algorithm)
    try:
        for value in [*SMALL_VALUES, cyclic, cyclic_dict]:
            h = fingerprint.new_hasher()
            fingerprint.values._feed(h, value, set())
            assert value_digest(value) == h.hexdigest(), value
    finally:
        set_hash_algorithm("xxh3_128")


def test_file_and_folder_digests_are_those_main_computed(tmp_path):
    (tmp_path / "t" / "sub" / "empty").mkdir(parents=True)
    (tmp_path / "t" / "a.txt").write_text("alpha\n")
    (tmp_path / "t" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4097)  # over 1 MiB
    (tmp_path / "t" / "sub" / "zero").write_bytes(b"")
    assert path_digest(tmp_path / "t", use_stat_cache=False) == "f4895f7d78d39ef4695a68d13a1aceac"
    assert (path_digest(tmp_path / "t" / "sub" / "b.bin", use_stat_cache=False)
            == "3898db5d5b4a87468b544a01c6d30e1c")


@pytest.mark.parametrize("size", [0, 1, 4095, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
                                  2 * CHUNK_SIZE + 7])
def test_a_file_digest_is_its_bytes_digest_whatever_its_size(tmp_path, size):
    data = bytes(range(251)) * (size // 251) + bytes(range(size % 251))
    (tmp_path / "f").write_bytes(data)
    assert path_digest(tmp_path / "f", use_stat_cache=False) == xxhash.xxh3_128_hexdigest(data)


def test_a_memory_call_binds_with_the_signature_the_function_has_now():
    def h(x, y=1):
        return x + y

    assert CallKeys(h, ()).signature is CallKeys(h, ()).signature  # inspected once
    h.__defaults__ = (2,)
    assert CallKeys(h, ()).arguments((1,), {}) == {"x": 1, "y": 2}
    h.__code__ = (lambda x, z=3: x).__code__
    assert CallKeys(h, ()).arguments((1,), {}) == {"x": 1, "z": 2}

    @functools.wraps(h)
    def wrapper(*args, **kwargs):
        return h(*args, **kwargs)

    assert list(CallKeys(wrapper, ()).signature.parameters) == ["x", "z"]


def test_a_function_held_by_a_value_is_pickled_under_the_name_it_always_had():
    """fingerprint became a package: what a value's digest pickles for a function it
    holds still names ``dagnb.fingerprint`` (else every such key would change once)."""
    from dagnb.fingerprint import values

    held = []
    values._pickle_into(held.append, [lambda: 1])
    stream = b"".join(held)
    assert b"dagnb.fingerprint\x94\x8c\x11_function_of_code" in stream, stream
    assert fingerprint._function_of_code is values._function_of_code
