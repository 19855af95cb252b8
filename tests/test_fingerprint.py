from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import io
import linecache
import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dagnb import Memory, fingerprint
from dagnb.errors import FingerprintError
from dagnb.fingerprint import (
    code_digest,
    code_source_parts,
    directory_digest,
    path_digest,
    paths,
    sources,
    value_digest,
)
from dagnb.testing import isolated

HELPERS = '''
import dataclasses

@dataclasses.dataclass
class Box:
    tags: set
    names: frozenset

def f(x):
    return {x, "alpha", "beta"}
'''


def load_module(tmp_path: Path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- values


def test_scalars_are_type_tagged():
    values = [1, "1", 1.0, True, b"1", None, (1,), [1], {1}, frozenset({1}), {"1": 1}]
    digests = {value_digest(v) for v in values}
    assert len(digests) == len(values)
    assert value_digest(0) != value_digest(False)
    assert value_digest(float("nan")) == value_digest(float("nan"))


def test_digest_is_a_128_bit_hex_string():
    digest = value_digest({"a": [1, 2.5, "x"]})
    assert len(digest) == 32
    int(digest, 16)


def test_dict_and_set_order_do_not_matter():
    assert value_digest({"a": 1, "b": 2}) == value_digest({"b": 2, "a": 1})
    assert value_digest({3, 1, 2}) == value_digest({2, 3, 1})
    assert value_digest({"a": 1, "b": 2}) != value_digest({"a": 2, "b": 1})
    assert value_digest([1, 2]) != value_digest([2, 1])


def test_self_referencing_list_terminates():
    items: list = [1]
    items.append(items)
    assert value_digest(items) == value_digest(items)


def test_same_digest_across_processes_and_hash_seeds(tmp_path):
    load_module(tmp_path, "fp_helpers", HELPERS)
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import fp_helpers
        from dagnb.fingerprint import value_digest, code_digest
        box = fp_helpers.Box({"x", "y", "zeta", "omega"}, frozenset({"p", "q", "r"}))
        print(value_digest({"s": {"a", "b", "c", "d"}, "d": {"k": 1, "j": 2}}))
        print(value_digest(box))
        print(code_digest(fp_helpers.f))
        """
    )
    outputs = []
    for seed in ("1", "12345", "999"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            env=env, capture_output=True, text=True, check=True,
        )
        outputs.append(done.stdout.split())
    assert outputs[0] == outputs[1] == outputs[2]
    import fp_helpers

    box = fp_helpers.Box({"x", "y", "zeta", "omega"}, frozenset({"p", "q", "r"}))
    assert outputs[0][1] == value_digest(box)
    assert outputs[0][2] == code_digest(fp_helpers.f)


def test_numpy_arrays_hash_by_content_dtype_and_shape():
    a = np.arange(12, dtype="float64").reshape(3, 4)
    assert value_digest(a) == value_digest(a.copy())
    assert value_digest(a) != value_digest(a.astype("float32"))
    assert value_digest(a) != value_digest(a.reshape(4, 3))
    b = a.copy()
    b[2, 3] = -1
    assert value_digest(a) != value_digest(b)
    dates = np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[ns]")
    assert value_digest(dates) != value_digest(dates[::-1])
    assert value_digest(np.array(["a", None], dtype=object)) != value_digest(
        np.array(["b", None], dtype=object)
    )


def test_an_arrays_order_in_memory_counts_as_ravel_order_k_reads_it():
    """A C- and a Fortran-ordered array of the same values shared a key, so a function of
    the layout (``np.ravel(a, order="K")``) got the other's result; joblib keys them
    apart. C-ordered arrays, slices of them and broadcast ones keep their keys."""
    c = np.arange(6, dtype="<i8").reshape(2, 3)
    fortran = np.asfortranarray(c)
    assert value_digest(fortran) != value_digest(c)
    assert value_digest(fortran) == value_digest(np.asfortranarray(c.copy()))
    assert value_digest(fortran[:, ::2]) != value_digest(c[:, ::2])  # Fortran-like, strided
    assert value_digest(c[:, ::2]) == value_digest(c[:, ::2].copy())
    assert value_digest(np.broadcast_to(c[0], (4, 3))) == value_digest(np.tile(c[0], (4, 1)))
    assert value_digest(c[:1].T) == value_digest(c[:1].T.copy())  # a length-1 axis: no order
    assert value_digest(c) == "57287ef3f62ece52b7aedea202c30f9b"  # (as before layouts counted)


def test_an_array_subclass_counts_its_class_and_a_masked_arrays_mask(tmp_path):
    data = np.array([1.0, 2.0, 100.0])
    masked = np.ma.masked_array(data, mask=[0, 0, 1])
    assert value_digest(masked) != value_digest(data)
    assert value_digest(masked) != value_digest(np.ma.masked_array(data, mask=[0, 1, 0]))
    assert value_digest(masked) != value_digest(np.ma.masked_array(data, mask=[0, 0, 1],
                                                                   fill_value=-1.0))
    assert value_digest(masked) == value_digest(masked.copy())
    rows = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
    assert value_digest(rows.view(np.recarray)) != value_digest(rows)
    mapped = np.memmap(tmp_path / "a.bin", dtype="float64", mode="w+", shape=(3,))
    mapped[:] = data
    assert value_digest(mapped) == value_digest(data)  # a memmap counts as its content


def test_a_nullable_column_with_na_hashes_exactly():
    """pandas 3 gives a nullable int column holding NA to numpy as floats, in which
    2**53 + 1 is 2**53: two different ID columns hashed the same."""
    big = pd.Series([2**53 + 1, pd.NA], dtype="Int64")
    assert value_digest(big) != value_digest(pd.Series([2**53, pd.NA], dtype="Int64"))
    assert value_digest(big) == value_digest(big.copy())
    assert value_digest(pd.DataFrame({"id": big})) != value_digest(
        pd.DataFrame({"id": pd.Series([2**53, pd.NA], dtype="Int64")}))


def test_a_frames_attrs_flags_and_index_frequency_count():
    frame = pd.DataFrame({"a": [1, 2, 3]}, index=pd.date_range("2020", periods=3, freq="D"))
    tagged = frame.copy()
    tagged.attrs["unit"] = "m"
    assert value_digest(tagged) != value_digest(frame)
    assert value_digest(tagged) == value_digest(tagged.copy())
    assert value_digest(frame.set_flags(allows_duplicate_labels=False)) != value_digest(frame)
    no_frequency = frame.set_axis(pd.DatetimeIndex(list(frame.index), freq=None))
    assert value_digest(no_frequency) != value_digest(frame)
    assert value_digest(frame["a"].rename_axis("t")) != value_digest(
        no_frequency["a"].rename_axis("t"))


def test_pandas_objects_include_index_and_names():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    assert value_digest(frame) == value_digest(frame.copy())
    assert value_digest(frame) != value_digest(frame.rename(columns={"a": "c"}))
    assert value_digest(frame) != value_digest(frame.set_axis([5, 6]))
    changed = frame.copy()
    changed.loc[1, "b"] = "z"  # object column: pickled
    assert value_digest(frame) != value_digest(changed)
    series = frame["a"]
    assert value_digest(series) != value_digest(series.rename("other"))
    assert value_digest(pd.Index([1, 2])) != value_digest(pd.Index([1, 3]))
    multi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])
    assert value_digest(multi) != value_digest(pd.MultiIndex.from_tuples([("a", 1), ("b", 3)]))
    cats = pd.Series(pd.Categorical(["x", "y"]))
    assert value_digest(cats) != value_digest(pd.Series(["x", "y"]))


def test_a_categoricals_categories_and_order_count_whatever_they_hold():
    """Numbers and dates in a categorical hashed by their values only: [1, 2] under
    categories [1, 2, 3], [1, 2] or [2, 1] (ordered) shared a key."""
    numbers = [pd.Categorical([1, 2], categories=categories, ordered=ordered)
               for categories, ordered in (([1, 2, 3], False), ([1, 2], False),
                                           ([2, 1], False), ([1, 2], True))]
    days = pd.to_datetime(["2020-01-01", "2020-01-02"])
    dates = [pd.Categorical(days, categories=categories)
             for categories in (days, days.append(pd.to_datetime(["2020-01-03"])))]
    for kinds in (numbers, dates):
        for wrap in (pd.Series, pd.CategoricalIndex, lambda c: pd.DataFrame({"c": c})):
            digests = [value_digest(wrap(categorical)) for categorical in kinds]
            assert len(set(digests)) == len(digests)
            assert digests[0] == value_digest(wrap(kinds[0].copy()))


def _equal_strings_shared_and_apart() -> tuple[list[str], list[str]]:
    """Equal lists of text: one repeating a few string objects (as ``read_csv`` gives
    them), the other with a string object of its own in each place."""
    shared = ["paris", "lyon"] * 3
    return shared, ["".join(list(text)) for text in shared]


def test_equal_objects_in_an_array_or_a_column_hash_alike_shared_or_not():
    """Pickle writes an object met again as a reference to the first: an object array
    or a string column read by read_csv (its equal strings one object) and its rebuilt
    copy (a string object each) hashed apart."""
    shared, apart = _equal_strings_shared_and_apart()
    csv = "city,n\n" + "".join(f"{city},{n}\n" for n, city in enumerate(shared))
    read = pd.read_csv(io.StringIO(csv))
    rebuilt = pd.DataFrame({"city": apart, "n": range(len(apart))})
    assert read.equals(rebuilt)
    frames = [read, rebuilt, pickle.loads(pickle.dumps(rebuilt))]
    assert len({value_digest(frame) for frame in frames}) == 1
    for wrap in (lambda texts: np.array(texts, dtype=object),
                 lambda texts: pd.Series(texts, dtype=object),
                 lambda texts: pd.Series(pd.Categorical(texts)), pd.Index):
        assert value_digest(wrap(shared)) == value_digest(wrap(apart))


def test_objects_in_an_array_that_differ_hash_apart():
    def digest(*items: object) -> str:
        return value_digest(np.array(items, dtype=object))

    assert digest("a", "b") != digest("a", "c")
    assert digest(1, "x") != digest("1", "x")
    assert digest(None, "x") != digest(math.nan, "x")
    assert digest({1, 2}) == digest({2, 1})  # (sets in digest order, as elsewhere)
    assert value_digest(pd.Series(["a", "b"], dtype=object)) != value_digest(
        pd.Series(["a", "c"], dtype=object))


def test_an_array_holding_itself_is_hashed_with_the_pickle_memo():
    """Pickle without a memo refuses a cycle (ValueError): hashed as before, then."""
    looped: list[object] = [1]
    looped.append(looped)
    array = np.array([looped, "x"], dtype=object)
    assert value_digest(array) == value_digest(array.copy())
    assert value_digest(array) != value_digest(np.array([[1], "x"], dtype=object))


def test_unpicklable_value_raises_with_advice_and_no_placeholder_name():
    with pytest.raises(FingerprintError, match=r"type '_thread\.lock'.*leave it out") as e:
        value_digest({"lock": threading.Lock()})
    assert "ignore=" not in str(e.value)  # only the caller that knows the name says how


def test_functions_as_values_hash_by_code():
    assert value_digest(lambda x: x + 1) != value_digest(lambda x: x + 2)


def test_blake3_is_available(monkeypatch):
    before = value_digest("x")
    try:
        fingerprint.set_hash_algorithm("blake3")
        assert fingerprint.get_hash_algorithm() == "blake3"
        assert len(value_digest("x")) == 64
    finally:
        fingerprint.set_hash_algorithm("xxh3_128")
    assert value_digest("x") == before
    with pytest.raises(FingerprintError, match="'md5'"):
        fingerprint.set_hash_algorithm("md5")


# ----------------------------------------------------------------------------- code

BASE = '''
SCALE = 3

def helper(x):
    return x + 1

def compute(x):
    """Docstring."""
    # a comment
    return helper(x) * SCALE
'''


def test_comments_docstrings_and_formatting_do_not_count(tmp_path):
    one = load_module(tmp_path, "code_v1", BASE)
    edited = BASE.replace('"""Docstring."""', '"""Another docstring."""').replace(
        "# a comment", "# another comment\n\n"
    ).replace("helper(x) * SCALE", "helper( x )*SCALE")
    two = load_module(tmp_path, "code_v2", edited)
    assert code_digest(one.compute) == code_digest(two.compute)


def test_helper_edit_changes_the_digest(tmp_path):
    one = load_module(tmp_path, "code_h1", BASE)
    two = load_module(tmp_path, "code_h2", BASE.replace("x + 1", "x + 2"))
    assert code_digest(one.compute) != code_digest(two.compute)


def test_constant_changes_the_digest(tmp_path):
    module = load_module(tmp_path, "code_c1", BASE)
    before = code_digest(module.compute)
    module.SCALE = 4  # a notebook cell run again rebinds it
    assert code_digest(module.compute) != before
    module.SCALE = 3
    assert code_digest(module.compute) == before


def test_upper_case_containers_count_lower_case_state_does_not(tmp_path):
    source = """
    CONFIG = {"n": 1}
    calls = []

    def run(x):
        calls.append(x)
        return CONFIG["n"] * x
    """
    module = load_module(tmp_path, "code_state", source)
    before = code_digest(module.run)
    module.run(1)
    other = load_module(tmp_path, "code_state_2", source)
    other.calls.extend([1, 2, 3])  # state: not part of the code
    assert code_digest(other.run) == before
    other.CONFIG = {"n": 2}  # a constant: part of it
    assert code_digest(other.run) != before


def test_redefined_helper_is_noticed(tmp_path):
    module = load_module(tmp_path, "code_r1", BASE)
    before = code_digest(module.compute)
    exec("def helper(x):\n    return x - 1\n", module.__dict__)
    assert code_digest(module.compute) != before


def test_source_parts_show_normalized_code(tmp_path):
    module = load_module(tmp_path, "code_p1", BASE)
    parts = code_source_parts(module.compute)
    assert parts["def compute"] == "def compute(x):\n    return helper(x) * SCALE"
    assert parts["def helper"] == "def helper(x):\n    return x + 1"
    assert parts["const SCALE"] == "3"


def test_recursion_terminates(tmp_path):
    module = load_module(
        tmp_path,
        "code_rec",
        """
        def even(n):
            return n == 0 or odd(n - 1)

        def odd(n):
            return n != 0 and even(n - 1)
        """,
    )
    assert code_digest(module.even) == code_digest(module.even)
    assert code_digest(module.even) != code_digest(module.odd)


def test_lambdas_hash_by_their_own_source():
    first = lambda x: x + 1  # noqa: E731
    same = lambda x: x + 1  # noqa: E731
    other = lambda x: x + 2  # noqa: E731
    assert code_digest(first) == code_digest(same)
    assert code_digest(first) != code_digest(other)
    assert list(code_source_parts(first).values()) == ["lambda x: x + 1"]


def test_without_source_the_bytecode_counts():
    namespace: dict = {}
    exec('def f(x):\n    "doc"\n    return x + 1\n', namespace)
    exec('def f(x):\n    "other doc"\n    return x + 1\n', (same := {}))
    exec("def f(x):\n    return x + 2\n", (other := {}))
    assert code_digest(namespace["f"]) == code_digest(same["f"])
    assert code_digest(namespace["f"]) != code_digest(other["f"])


def test_partials_methods_and_builtins():
    from functools import partial

    assert code_digest(partial(int, base=2)) != code_digest(partial(int, base=8))
    assert code_digest(len) == code_digest(len)
    assert code_digest(len) != code_digest(sum)


# ----------------------------------------------------------------------------- paths


def make_tree(root: Path, count: int) -> None:
    old = 1_600_000_000  # long ago, so the stat cache may trust the mtimes
    for index in range(count):
        folder = root / f"d{index % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{index:04d}.txt"
        path.write_text(f"content {index}")
        os.utime(path, (old, old))


def test_directory_digest_covers_names_contents_and_empty_dirs(tmp_path):
    make_tree(tmp_path / "t", 10)
    first = directory_digest(tmp_path / "t")
    (tmp_path / "t" / "empty").mkdir()
    with_empty = directory_digest(tmp_path / "t")
    assert with_empty != first
    (tmp_path / "t" / "empty").rmdir()
    assert directory_digest(tmp_path / "t") == first
    (tmp_path / "t" / "d00" / "f0000.txt").rename(tmp_path / "t" / "d00" / "g0000.txt")
    assert directory_digest(tmp_path / "t") != first


def test_file_digest_follows_symlinks(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    assert path_digest(tmp_path / "link.txt") == path_digest(tmp_path / "a.txt")
    with pytest.raises(FileNotFoundError):
        path_digest(tmp_path / "missing")


def _symlink_dag(root: Path, levels: int) -> Path:
    """``levels`` folders, each holding two links to the next: 2**levels paths."""
    root.mkdir()
    (root / f"d{levels}").mkdir()
    (root / f"d{levels}" / "leaf.txt").write_text("leaf")
    for level in range(levels - 1, -1, -1):
        (root / f"d{level}").mkdir()
        for link in ("a", "b"):
            (root / f"d{level}" / link).symlink_to(root / f"d{level + 1}")
    return root / "d0"


def test_a_symlink_dag_is_walked_once_per_folder(tmp_path):
    import time

    top = _symlink_dag(tmp_path / "dag", 18)
    started = time.perf_counter()
    first = directory_digest(top)
    assert time.perf_counter() - started < 2
    (tmp_path / "dag" / "d18" / "leaf.txt").write_text("LEAF")
    assert directory_digest(top) != first  # still covers what the links reach


def test_a_symlink_loop_is_walked_once_and_a_retarget_counts(tmp_path):
    (tmp_path / "t" / "sub").mkdir(parents=True)
    (tmp_path / "t" / "sub" / "x.txt").write_text("x")
    (tmp_path / "t" / "sub" / "up").symlink_to(tmp_path / "t")
    (tmp_path / "other").mkdir()
    first = directory_digest(tmp_path / "t")
    (tmp_path / "t" / "sub" / "up").unlink()
    (tmp_path / "t" / "sub" / "up").symlink_to(tmp_path / "t" / "sub")
    assert directory_digest(tmp_path / "t") != first


def test_a_tree_deeper_than_the_limit_is_one_error_naming_it(tmp_path):
    deep = tmp_path / "deep"
    os.makedirs(os.path.join(deep, *["d"] * (fingerprint.MAX_DEPTH + 5)))
    with pytest.raises(FingerprintError, match=r"deep.* nests more than 256 levels deep"):
        directory_digest(deep)
    os.makedirs(os.path.join(tmp_path / "ok", *["d"] * 200))
    directory_digest(tmp_path / "ok")


def test_stat_cache_rechecks_an_unchanged_tree_without_reading(tmp_path, monkeypatch):
    stat_file = tmp_path / "cache" / "stat-cache.json"
    fingerprint.configure_stat_cache(stat_file)
    make_tree(tmp_path / "tree", 2000)
    first = path_digest(tmp_path / "tree")
    reads = []
    real = paths._hash_file
    monkeypatch.setattr(paths, "_hash_file", lambda p: reads.append(p) or real(p))
    assert path_digest(tmp_path / "tree") == first
    assert reads == []
    target = tmp_path / "tree" / "d05" / "f0005.txt"
    target.write_text("changed!")
    os.utime(target, (1_600_000_100, 1_600_000_100))
    changed = path_digest(tmp_path / "tree")
    assert changed != first
    assert reads == [str(target)]
    assert stat_file.exists()
    # persisted: a fresh context (as a fresh process) reads no content either
    with isolated():
        fingerprint.configure_stat_cache(stat_file)
        reads.clear()
        assert path_digest(tmp_path / "tree") == changed
        assert reads == []


def test_a_fresh_context_starts_with_an_empty_stat_cache_in_memory(tmp_path, monkeypatch):
    fingerprint.configure_stat_cache(tmp_path / "stat-cache.json")
    path = tmp_path / "old.txt"
    path.write_text("old")
    os.utime(path, (1_600_000_000, 1_600_000_000))  # outside the racy window
    path_digest(path)
    reads = []
    real = paths._hash_file
    monkeypatch.setattr(paths, "_hash_file", lambda p: reads.append(p) or real(p))
    with isolated():
        path_digest(path)
        assert reads == [str(path)]  # nothing known here, and no file configured
    path_digest(path)
    assert reads == [str(path)]  # the outer context's cache is untouched


def test_recently_modified_files_are_rehashed(tmp_path, monkeypatch):
    path = tmp_path / "fresh.txt"
    path.write_text("new")  # mtime is now: within the racy window
    first = path_digest(path)
    reads = []
    real = paths._hash_file
    monkeypatch.setattr(paths, "_hash_file", lambda p: reads.append(p) or real(p))
    assert path_digest(path) == first
    assert reads == [str(path)]


def test_file_larger_than_a_chunk(tmp_path):
    data = os.urandom(fingerprint.CHUNK_SIZE * 2 + 17)
    (tmp_path / "big").write_bytes(data)
    import xxhash

    assert path_digest(tmp_path / "big", use_stat_cache=False) == xxhash.xxh3_128_hexdigest(data)


# ----------------------------------------------------------------------------- review


def test_replaced_defaults_or_helper_code_change_the_digest():
    from dagnb.fingerprint import code_digest

    def scale(x, factor=1):
        return x * factor

    before = code_digest(scale)
    scale.__defaults__ = (2,)
    assert code_digest(scale) != before

    def helper():
        return 1

    def uses():
        return helper()

    before = code_digest(uses)
    helper.__code__ = (lambda: 2).__code__
    assert code_digest(uses) != before


def test_the_code_cache_does_not_keep_its_function_alive():
    import gc
    import weakref

    from dagnb.fingerprint import code_digest

    def short_lived(x):
        return x + 1

    code_digest(short_lived)
    ref = weakref.ref(short_lived)
    del short_lived
    gc.collect()
    assert ref() is None


def test_a_spawn_workers_values_that_name_no_script_class_hash_as_anywhere(monkeypatch):
    """In a process whose main module is ``__mp_main__`` (a spawn or forkserver
    worker), a value that does not name it is pickled as anywhere else: not by the
    pure-Python pickler, whose frames of a pickle over 64 KiB are cut elsewhere."""
    big = types.SimpleNamespace(**{f"k{i}": [i, str(i), (i,)] for i in range(30_000)})
    small = types.SimpleNamespace(text="__mp_main__")  # (pickled again, the same)
    outside = value_digest(big), value_digest(small)
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__mp_main__"))
    assert (value_digest(big), value_digest(small)) == outside


class _Blob:
    """Hands its parts to pickle out of band, as numpy does, but with no shape around."""

    def __init__(self, *parts: bytes) -> None:
        self.parts = [bytearray(p) for p in parts]

    def __reduce_ex__(self, protocol):
        return (_Blob, tuple(pickle.PickleBuffer(p) for p in self.parts))


def test_buffers_handed_out_of_band_count_with_their_lengths():
    """Two values whose buffers hold the same bytes cut elsewhere are two values."""
    assert value_digest(_Blob(b"ab", b"c")) != value_digest(_Blob(b"a", b"bc"))
    assert value_digest(_Blob(b"ab", b"c")) == value_digest(_Blob(b"ab", b"c"))
    holder = types.SimpleNamespace(a=np.arange(4.0), b=np.ones(3))
    assert value_digest(holder) != value_digest(types.SimpleNamespace(a=np.arange(4.0),
                                                                      b=np.ones(4)))


@pytest.fixture
def adopted():
    """The sources adopted by a test are forgotten after it."""
    yield fingerprint.adopt_sources
    sources._ADOPTED.clear()


def test_sources_sent_along_are_those_the_key_was_made_of(tmp_path, monkeypatch, adopted):
    """A script edited while it runs: what goes to a worker is the source hashed (the
    code running), not the file as it is now; the worker, whose copy has no file, then
    computes the very key made here."""
    cloudpickle = pytest.importorskip("cloudpickle")
    (tmp_path / "job_module.py").write_text("def step(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import job_module

    here = code_digest(job_module.step)
    (tmp_path / "job_module.py").write_text("def step(x):\n    return x + 2\n")
    linecache.checkcache()
    table = fingerprint.source_table(job_module.step)
    assert [text for _, text in table.values()] == ["def step(x):\n    return x + 1"]
    sent = cloudpickle.loads(cloudpickle.dumps(job_module.step))  # by value: no file
    sent.__module__ = "__main__"
    adopted(table)
    assert code_digest(sent) == here


def _version(source: str) -> types.FunctionType:
    namespace: dict = {}
    exec(compile(source, "<version>", "exec"), namespace)
    return namespace["f"]


def test_an_adopted_source_serves_only_the_very_same_code(adopted):
    """Two versions of a function (no source: made by ``exec``) whose bytecode differs
    only in its flags (``*a``): the source sent for one is never taken for the other."""
    one = _version("def f(x):\n    def inner(a):\n        return a\n    return inner(x)\n")
    two = _version("def f(x):\n    def inner(*a):\n        return a\n    return inner(x)\n")
    adopted({sources._code_key(two): ("dump", "def f(x): ...")})
    assert sources._normalized_source(two) == ("dump", "def f(x): ...")
    assert sources._normalized_source(one) is None
    assert code_digest(one) != code_digest(two)


# -- what a function's code works on: objects, classes, wrappers -------------------------
class _Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return self.k * x

    def __call__(self, x):
        return self.k * x


def test_a_methods_object_and_a_callable_object_count_by_content(tmp_path):
    """``Scaler(3).apply`` is not ``Scaler(2).apply``, in a key made now or later."""
    assert code_digest(_Scaler(2).apply) != code_digest(_Scaler(3).apply)
    assert code_digest(_Scaler(2)) != code_digest(_Scaler(3))
    assert code_digest(_Scaler(2).apply) == code_digest(_Scaler(2).apply)
    memory = Memory(str(tmp_path / "cache"))
    assert [memory.cache(_Scaler(k).apply)(10) for k in (2, 3)] == [20, 30]
    assert [memory.cache(_Scaler(k))(10) for k in (2, 3)] == [20, 30]
    locked = _Scaler(threading.Lock())
    with pytest.raises(FingerprintError, match="_Scaler object whose method is called"):
        memory.cache(locked.apply)(1)


def _make_rule(k):
    class Rule:
        def apply(self, x):
            return x * k
    return Rule()


def test_instances_of_two_local_classes_of_one_name_hash_apart():
    assert value_digest(_make_rule(2)) != value_digest(_make_rule(3))
    assert value_digest(_make_rule(2)) == value_digest(_make_rule(2))


def _module(tmp_path, monkeypatch, name, text):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # (edits of one size in one
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))  # second: no stale .pyc)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


DECORATED = """
    import functools

    def scaled(fn):
        @functools.wraps(fn)
        def wrapper(x):
            return FACTOR * fn(x)
        return wrapper

    @scaled
    def f(x):
        return x + 1
"""

SHAPE = """
    class Shape:
        sides = 4
        def perimeter(self, length):
            return self.sides * length + 1
"""

PERIMETER = """
    def perimeter(length):
        return Shape().perimeter(length)
"""

PLAIN_SHAPE = SHAPE.replace(" + 1", "")


def test_a_decorators_wrapper_and_a_redefined_class_count_as_they_are(tmp_path, monkeypatch):
    """A decorator's body counts (inspect's source is the wrapped function's); a class
    defined twice under one name in a file counts as itself (inspect gives the first,
    before Python 3.13); a class with no source counts its values too."""
    two, three, again = (_module(tmp_path, monkeypatch, name, DECORATED.replace("FACTOR", k))
                         for name, k in (("deco_two", "2"), ("deco_three", "3"),
                                         ("deco_two_again", "2")))
    assert code_digest(two.f) != code_digest(three.f)
    assert code_digest(two.f) == code_digest(again.f)
    edited = _module(tmp_path, monkeypatch, "shape_edited", PLAIN_SHAPE + SHAPE + PERIMETER)
    same = _module(tmp_path, monkeypatch, "shape_same", PLAIN_SHAPE + PLAIN_SHAPE + PERIMETER)
    assert code_digest(edited.perimeter) != code_digest(same.perimeter)
    made: list[dict] = [{"__name__": "notebook_like"}, {"__name__": "notebook_like"}]
    for namespace, sides in zip(made, (4, 5), strict=True):  # (no source: a notebook's)
        text = textwrap.dedent(SHAPE) + textwrap.dedent(PERIMETER)
        exec(text.replace("sides = 4", f"sides = {sides}"), namespace)
    assert code_digest(made[0]["perimeter"]) != code_digest(made[1]["perimeter"])


CLASSY = """
    import functools, math

    def helper(x):
        return x + 1

    class Base:
        K = 2

    class Model(Base):
        ROUND = staticmethod(math.floor)

        class Inner:
            def twice(self, x):
                return 2 * x

        @functools.cached_property
        def offset(self):
            return 1

        def predict(self, x):
            return self.ROUND(self.Inner().twice(helper(x)) * self.K + self.offset)

    def run(x):
        return Model().predict(x)
"""


@pytest.mark.parametrize("edit", [
    ("x + 1", "x + 100"),  # a helper a method calls
    ("K = 2", "K = 3"),  # a base class's attribute
    ("2 * x", "3 * x"),  # a nested class's method
    ("return 1", "return 5"),  # a cached property
    ("math.floor", "math.ceil"),  # a builtin a static method holds
], ids=["helper", "base", "nested", "cached_property", "staticmethod"])
def test_what_a_class_reaches_counts(tmp_path, monkeypatch, edit):
    """Through a function that uses the class, a bound method and an instance passed as
    a value (a class pickle cannot find by name), in a file and with no source."""
    before, after = CLASSY, CLASSY.replace(*edit)
    assert before != after
    name = f"classy_{abs(hash(edit))}"
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # (an edit of the same size
    module = _module(tmp_path, monkeypatch, name, before)  # in the same second: no .pyc)
    digests = code_digest(module.run), code_digest(module.Model().predict)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(after))  # (edited, run again)
    linecache.checkcache()
    module = importlib.reload(module)
    assert code_digest(module.run) != digests[0]
    assert code_digest(module.Model().predict) != digests[1]
    made = []
    for text in (before, after):
        namespace = {"__name__": "notebook_like"}
        exec(textwrap.dedent(text), namespace)  # (no source, and pickle cannot find them)
        made.append(namespace)
    assert code_digest(made[0]["run"]) != code_digest(made[1]["run"])
    assert value_digest(made[0]["Model"]()) != value_digest(made[1]["Model"]())


class _ByName(type):  # (a metaclass saying two classes of one name are one)
    def __eq__(cls, other):
        return isinstance(other, type) and cls.__qualname__ == other.__qualname__

    def __hash__(cls):
        return hash(cls.__qualname__)


def test_a_methods_class_counts_as_it_is_now(tmp_path):
    """Through a bound method: a class given a member that shadows its base's, a sibling
    method replaced, a property over a cached function, a partial a static method holds,
    a class redefined under a metaclass that calls them equal; and a C method's object."""
    import operator

    class Base:
        x = 1

    class Sub(Base):
        @property
        @functools.cache  # noqa: B019
        def bonus(self):
            return 0

        scale = staticmethod(functools.partial(operator.mul, 1))

        def helper(self):
            return 1

        def value(self):
            return self.scale(self.x + self.helper() + self.bonus)

    memory = Memory(str(tmp_path / "cache"))
    assert memory.cache(Sub().value)() == 2
    Sub.x = 100  # (a member Sub did not have: it shadows Base's)
    assert memory.cache(Sub().value)() == 101
    Sub.helper = lambda self: 10
    assert memory.cache(Sub().value)() == 110
    Sub.scale = staticmethod(functools.partial(operator.mul, 2))
    assert memory.cache(Sub().value)() == 220
    digests = set()
    for factor in (2, 3):
        class Model(metaclass=_ByName):
            k = factor

            def predict(self, x):
                return self.k * x
        digests.add(code_digest(Model().predict))
    assert len(digests) == 2
    assert code_digest({"a": 1}.get) != code_digest({"a": 2}.get)


SUBCLASS_OF_A_LIBRARY = """
    import collections

    class Tally(collections.Counter):
        pass
"""


def test_a_method_of_a_class_with_no_function_of_its_own_has_a_key(tmp_path, monkeypatch):
    """A class of the user's, with source, whose methods are all a library's."""
    module = _module(tmp_path, monkeypatch, "tally", SUBCLASS_OF_A_LIBRARY)
    assert code_digest(module.Tally("ab").most_common) != code_digest(
        module.Tally("abb").most_common)


MANY_PLACES = """
    import functools

    class Plain:
        x = 1

    @functools.total_ordering
    class Decorated:
        def __lt__(self, other):
            return False

    class Outer:
        class Inner:
            class Deepest:
                pass

    def factory():
        class Local:
            y = 2
        return Local

    if True:
        class InIf:
            pass
    try:
        class InTry:
            pass
    except ImportError:
        class InTry:  # (the first of a name is the one inspect finds)
            z = 3

    match 1:
        case 1:
            class InMatch:
                pass

    class Plain2(Plain):
        pass
"""


def test_a_classs_lines_are_the_ones_inspect_finds(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, "many_places", MANY_PLACES)
    classes = [module.Plain, module.Decorated, module.Outer, module.Outer.Inner,
               module.Outer.Inner.Deepest, module.factory(), module.InIf, module.InTry,
               module.InMatch, module.Plain2]
    for cls in classes:
        assert sources._source_lines(cls) == inspect.getsourcelines(cls), cls


def test_a_module_of_many_classes_is_parsed_once_for_them_and_again_once_edited(
        tmp_path, monkeypatch):
    chain = "class C0:\n    n = 0\n" + "".join(
        f"class C{i}(C{i - 1}):\n    n = {i}\n" for i in range(1, 60))
    text = chain + "def use():\n    return C59.n\n"
    module = _module(tmp_path, monkeypatch, "chained_classes", text)
    parses = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda source, *a, **k: parses.append(len(source))
                        or real_parse(source, *a, **k))
    once = 0 if sys.version_info >= (3, 13) else 1  # (3.13's inspect reads where a class
    first = code_digest(module.use)                 # starts, with no parse)
    assert sum(size >= len(chain) for size in parses) == once  # (inspect: once a class)
    (tmp_path / "chained_classes.py").write_text(text.replace("n = 30", "n = 300"))
    module = importlib.reload(module)  # (the classes as the edited file makes them; not
    #                                      reloaded, they count as the text they came from)
    assert code_digest(module.use) != first
    assert sum(size >= len(chain) for size in parses) == 2 * once


FEATURES = """
    RATE = 2

    class Thing:
        def go(self):
            return 1

    def make(x):
        return x + 1
"""

STEPS = """
    import features
    from features import make, Thing

    def by_attribute(x):
        return features.make(x) * features.RATE

    def by_name(x):
        return make(x) + Thing().go()
"""


@pytest.mark.parametrize("edit", [("x + 1", "x + 100"), ("RATE = 2", "RATE = 3"),
                                  ("return 1", "return 7")])
def test_a_helper_module_of_the_project_counts_by_its_code(tmp_path, monkeypatch, edit):
    """A project's own module (not Python's, not an installed package's) is the user's
    code: edited (then reloaded, or the kernel restarted), what uses it runs again."""
    for name in ("features", "feature_steps"):  # (another case's, imported before)
        monkeypatch.delitem(sys.modules, name, raising=False)
    features = _module(tmp_path, monkeypatch, "features", FEATURES)
    steps = _module(tmp_path, monkeypatch, "feature_steps", STEPS)
    before = {f: code_digest(getattr(steps, f)) for f in ("by_attribute", "by_name")}
    (tmp_path / "features.py").write_text(textwrap.dedent(FEATURES).replace(*edit))
    importlib.reload(features)
    importlib.reload(steps)
    after = {f: code_digest(getattr(steps, f)) for f in ("by_attribute", "by_name")}
    changed = {f for f in before if before[f] != after[f]}
    expected = {"RATE": {"by_attribute"}, "x +": {"by_attribute", "by_name"},
                "return": {"by_name"}}
    assert changed == next(v for k, v in expected.items() if edit[0].startswith(k))


def test_libraries_and_dagnb_count_by_name(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, "uses_libraries", """
        import json
        import dagnb

        def f(x):
            return json.dumps(x), dagnb.current
    """)
    parts = code_source_parts(module.f)
    assert list(parts) == ["def f"], parts  # (json.dumps and dagnb.current: by name)


def test_a_helper_file_edited_but_not_reloaded_is_keyed_by_the_code_that_runs(
        tmp_path, monkeypatch):
    """The file says x * 100, the loaded code still does x * 1: keyed by the new text,
    its old result would be served after a restart, when the new code runs."""
    for name in ("helper_edited", "uses_helper_edited"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    helper = _module(tmp_path, monkeypatch, "helper_edited", "def make(x):\n    return x * 1\n")
    uses = _module(tmp_path, monkeypatch, "uses_helper_edited",
                   "from helper_edited import make\n\ndef g(x):\n    return make(x)\n")
    (tmp_path / "helper_edited.py").write_text("def make(x):\n    return x * 100\n")
    importlib.reload(uses)  # (the cell that defines g run again; make not reloaded)
    with pytest.warns(UserWarning, match=r"helper_edited\.py changed on disk since"):
        stale = code_digest(uses.g)
    importlib.reload(helper)
    importlib.reload(uses)  # (what a restart loads)
    assert code_digest(uses.g) != stale


def test_a_helper_file_saved_mid_edit_still_gives_a_key(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "helper_mid_edit", raising=False)
    helper = _module(tmp_path, monkeypatch, "helper_mid_edit",
                     "class Model:\n    def fit(self):\n        return 1\n\n"
                     "def make(x):\n    return x\n")
    (tmp_path / "helper_mid_edit.py").write_text("def make(x:\n    return (x\n")
    with pytest.warns(UserWarning, match=r"helper_mid_edit\.py changed on disk since"):
        assert len(code_digest(helper.make)) == 32
    assert len(value_digest(helper.Model.fit)) == 32


def test_a_method_assigned_from_another_file_counts_by_its_code(tmp_path, monkeypatch):
    for name in ("model_home", "model_patch"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    home = _module(tmp_path, monkeypatch, "model_home",
                   "class Model:\n    def predict(self, x):\n        return x\n\n"
                   "def use(x):\n    return Model().predict(x)\n")
    digests = []
    for factor in (1, 100):
        (tmp_path / "model_patch.py").write_text(
            f"def patched(self, x):\n    return x * {factor}\n")
        patch = importlib.reload(sys.modules["model_patch"]) if factor > 1 else (
            _module(tmp_path, monkeypatch, "model_patch", (tmp_path / "model_patch.py")
                    .read_text()))
        home.Model.predict = patch.patched
        digests.append(code_digest(home.use))
        assert code_source_parts(home.use)["def patched"].endswith(f"x * {factor}")
    assert digests[0] != digests[1]


def test_what_is_made_of_a_file_is_forgotten_least_recently_used_first():
    from dagnb.fingerprint.loaded import PerFile

    made = []
    per_file = PerFile(lambda lines: made.append(lines[0]) or lines[0], limit=3)
    files = {name: [name] for name in "abcd"}
    for name in "abcadab":  # (a walk returns to its files: none made twice while held)
        per_file(files[name])
    assert made == ["a", "b", "c", "d", "b"]


def test_a_distributions_and_the_users_packages_count_as_libraries():
    import site

    from dagnb.fingerprint.sources import _libraries

    for folder in [*site.getsitepackages(), site.getusersitepackages()]:
        assert os.path.realpath(folder) + os.sep in _libraries()


PACKAGE_SUB = "FACTOR = 1\n\ndef make(x):\n    return x * FACTOR\n"

REACHES = {
    "dotted": ("import reach_pkg.sub\n\ndef f(x):\n    return reach_pkg.sub.make(x)\n"),
    "body_import": ("def f(x):\n    import reach_pkg.sub\n    return reach_pkg.sub.make(x)\n"),
    "body_from": ("def f(x):\n    from reach_pkg.sub import make\n    return make(x)\n"),
    "cached": ("import reach_pkg.sub\n\ndef f(x):\n    return reach_pkg.sub.memo(x)\n"),
    "partial": ("import reach_pkg.sub\n\ndef f(x):\n    return reach_pkg.sub.part(x)\n"),
    "instance": ("import reach_pkg.sub\n\ndef f(x):\n    return reach_pkg.sub.model.go(x)\n"),
}
SUB_EXTRAS = ("import functools\n\n@functools.cache\ndef memo(x):\n    return make(x)\n\n"
              "part = functools.partial(make)\n\nclass Model:\n    def go(self, x):\n"
              "        return make(x)\n\nmodel = Model()\n")


@pytest.mark.parametrize("form", sorted(REACHES))
def test_what_a_function_reaches_of_a_project_package_counts(tmp_path, monkeypatch, form):
    """``pkg.sub.make``, imports in the body, a cached function, a partial and an object
    of the package's: edited (then loaded again), the function's key changes."""
    for name in ("reach_pkg", "reach_pkg.sub", "reach_user"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "reach_pkg").mkdir()
    (tmp_path / "reach_pkg" / "__init__.py").write_text("")
    sub = tmp_path / "reach_pkg" / "sub.py"
    sub.write_text(PACKAGE_SUB + SUB_EXTRAS)
    user = _module(tmp_path, monkeypatch, "reach_user", REACHES[form])
    importlib.import_module("reach_pkg.sub")
    before = code_digest(user.f)
    sub.write_text(PACKAGE_SUB.replace("FACTOR = 1", "FACTOR = 100") + SUB_EXTRAS)
    importlib.reload(sys.modules["reach_pkg.sub"])
    importlib.reload(user)  # (what a restart loads)
    assert code_digest(user.f) != before


def test_a_step_reads_a_project_modules_data_at_each_run(tmp_path, monkeypatch):
    from dagnb.fingerprint import code_with_values

    for name in ("run_settings", "run_train"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    settings = _module(tmp_path, monkeypatch, "run_settings", "params = {'lr': 0.1}\n")
    train = _module(tmp_path, monkeypatch, "run_train",
                    "import run_settings\n\ndef f():\n    return run_settings.params['lr']\n")
    code, values = code_with_values(train.f)
    assert values == {"run_settings.params": {"lr": 0.1}}
    settings.params["lr"] = 0.2  # (in place: a step hashes the value at each run)
    assert code_with_values(train.f) == (code, {"run_settings.params": {"lr": 0.2}})


def test_helpers_calling_helpers_hundreds_deep_still_give_a_key(tmp_path, monkeypatch):
    """A package's functions and classes refer to one another in long chains: a walk
    of 400 hops (some 2,000 frames) keys, and the recursion limit is as it was."""
    monkeypatch.delitem(sys.modules, "deep_chain", raising=False)
    text = "".join(f"def f{i}(x):\n    return f{i + 1}(x) + 1\n" for i in range(400))
    module = _module(tmp_path, monkeypatch, "deep_chain", text + "def f400(x):\n    return x\n")
    limit = sys.getrecursionlimit()
    assert len(code_digest(module.f0)) == 32
    assert sys.getrecursionlimit() == limit


def test_the_recursion_limit_stays_raised_while_any_thread_walks():
    """It is the process's: a thread that ends its walk while another is deep in one
    must not lower it under that one (the interpreter then aborts, not raises)."""
    import threading

    from dagnb.fingerprint import code as code_module

    limit = sys.getrecursionlimit()
    inside, leave, seen = threading.Event(), threading.Event(), []

    def long_walk():
        with code_module._deeper():
            inside.set()
            leave.wait(10)
            seen.append(sys.getrecursionlimit())

    walker = threading.Thread(target=long_walk)
    walker.start()
    inside.wait(10)
    with code_module._deeper():  # (a short walk in this thread, over while the other is on)
        pass
    leave.set()
    walker.join(10)
    assert seen == [code_module._WALK_DEPTH] and sys.getrecursionlimit() == limit


def test_a_set_literal_read_from_bytecode_cache_keys_the_same_under_every_hash_seed(tmp_path):
    """A .pyc holds a set literal's members in the order of the process that wrote it:
    the file still holds the loaded code under any seed, and the key is one."""
    (tmp_path / "set_helper.py").write_text(
        "def kind(x):\n    return x in {" + ", ".join(f"'w{i}'" for i in range(12)) + "}\n")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import set_helper\n"
              "from dagnb.fingerprint import code_digest; print(code_digest(set_helper.kind))")
    digests = set()
    for seed in ("1", "2", "3", "4", "5", "6"):  # (the first writes the .pyc)
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1, digests


def test_packages_installed_into_a_folder_on_sys_path_count_by_name(tmp_path, monkeypatch):
    """``pip install --target DIR`` with DIR on ``PYTHONPATH`` (clusters, containers):
    the folder holds the packages' *.dist-info, and their code is a library's."""
    site = tmp_path / "installed"
    (site / "targetlib").mkdir(parents=True)
    (site / "targetlib" / "__init__.py").write_text("def helper(x):\n    return x\n")
    (site / "targetlib-1.0.dist-info").mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "targetlib", raising=False)
    user = _module(tmp_path, monkeypatch, "uses_targetlib",
                   "import targetlib\n\ndef f(x):\n    return targetlib.helper(x)\n")
    assert list(code_source_parts(user.f)) == ["def f"]


def test_a_body_import_of_a_project_package_keys_the_same_in_every_process(tmp_path):
    (tmp_path / "stable_pkg").mkdir()
    (tmp_path / "stable_pkg" / "__init__.py").write_text("RATE = 2\n")
    (tmp_path / "stable_pkg" / "sub.py").write_text("def make(x):\n    return x\n")
    (tmp_path / "stable_user.py").write_text(
        "import stable_pkg.sub\n\ndef f(x):\n    import stable_pkg.sub\n"
        "    return stable_pkg.sub.make(x) * stable_pkg.RATE\n")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import stable_user\n"
              "from dagnb.fingerprint import code_digest; print(code_digest(stable_user.f))")
    digests = {subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
               for seed in ("1", "2", "3", "4")}
    assert len(digests) == 1, digests


FEATURIZER = """
    class Featurizer:
        def __init__(self, k):
            self.k = k

        def transform(self, x):
            return x * self.k
"""


def test_an_argument_built_from_a_project_class_counts_the_classs_code(tmp_path, monkeypatch):
    """``evaluate(Featurizer(2), X)``: the Featurizer edited is a miss, as a function
    that builds one inside is."""
    module = _module(tmp_path, monkeypatch, "featurizers", FEATURIZER)
    before = value_digest(module.Featurizer(2))
    assert value_digest(module.Featurizer(2)) == before
    assert value_digest(module.Featurizer(3)) != before
    (tmp_path / "featurizers.py").write_text(textwrap.dedent(
        FEATURIZER.replace("x * self.k", "x * self.k + 1000")))
    edited = importlib.reload(module)
    assert value_digest(edited.Featurizer(2)) != before


def test_the_globals_a_function_changes_are_its_state_not_its_input():
    """What a function only changes is its state; one it reads otherwise too
    (``len(calls)``, ``df["p"] /= df["p"].max()``) is its input, whose value stays in
    the key (keyed by name, a step normalizing a notebook frame in place was served the
    old frame's result)."""
    from dagnb.fingerprint.walker import changed_globals

    def work(x):
        calls.append(x)  # noqa: F821
        memo[x] = 1  # noqa: F821
        del stale[x]  # noqa: F821
        pending.update({x: 1})  # noqa: F821
        df["p"] /= df["p"].max()  # noqa: F821
        frame["r"] = frame["a"] * 2  # noqa: F821
        return params["alpha"] + len(calls) + sorted(items)[0]  # noqa: F821

    assert changed_globals(work.__code__) == {"memo", "stale", "pending"}


def test_a_step_that_changes_a_notebook_frame_it_reads_runs_again_for_another_frame():
    """``df["price"] /= df["price"].max()`` reads df: a new df is a new input (it was
    served the old frame's result, 1.75 for 4.0), as ``df["r"] = df["a"] / 2`` is."""
    namespace: dict[str, object] = {"pd": pd}
    exec(textwrap.dedent("""
        def normalize():
            df["price"] /= df["price"].max()
            return float(df["price"].sum())

        def add_ratio():
            df["r"] = df["price"] / 2
            return float(df["r"].sum())
    """), namespace)
    digests = []
    for prices in ([10.0, 20.0, 40.0], [1.0, 1.0, 1.0, 1.0]):
        namespace["df"] = pd.DataFrame({"price": prices})
        digests.append([code_digest(namespace[name]) for name in ("normalize", "add_ratio")])
    assert digests[0][0] != digests[1][0] and digests[0][1] != digests[1][1]


def test_a_closure_that_changes_a_frame_it_reads_is_keyed_by_that_frame(tmp_path):
    """``make(df)`` returning a function that normalizes ``df`` in place and returns its
    sum: another frame is another input (keyed by name, the second closure was served
    the first one's result, 1.75 for 4.0), while the function's own change to its frame
    is not looked for again (a hit stays a hit, as a counter it reads stays one)."""
    from dagnb import Memory

    def make(df):
        def normalized_sum():
            df["price"] /= df["price"].max()
            return float(df["price"].sum())
        return normalized_sum

    def first(prices):
        return make(pd.DataFrame({"price": prices}))

    assert code_digest(first([10.0, 20.0, 40.0])) != code_digest(first([1.0, 1.0, 1.0, 1.0]))
    memory = Memory(str(tmp_path / "cache"))
    assert memory.cache(first([10.0, 20.0, 40.0]))() == 1.75
    assert memory.cache(first([1.0, 1.0, 1.0, 1.0]))() == 4.0
    same = memory.cache(first([10.0, 20.0, 40.0]))
    assert same() == 1.75 and same.check_call_in_cache()  # its own change: still a hit


def test_a_memo_a_closure_fills_keeps_the_key_it_was_first_hashed_with():
    """A memo in a closure (changed and read) counts as the function first had it: hashed
    again after a global it reads was replaced by an equal one (a cell run again), the
    filled memo changed the key and ran the step once more for nothing."""
    namespace: dict[str, object] = {}
    exec(textwrap.dedent("""
        SCALE = [2]

        def make():
            memo = {}
            def fib(n):
                if n in memo:
                    return memo[n]
                memo[n] = n if n < 2 else fib(n - 1) + fib(n - 2)
                return memo[n]
            def total():
                return fib(20) * SCALE[0]
            return total
    """), namespace)
    total = namespace["make"]()  # type: ignore[operator]
    before = code_digest(total)
    assert total() == 13530
    namespace["SCALE"] = [2]  # equal, not the same object: hashed again
    assert code_digest(total) == before


def test_a_function_sent_elsewhere_hashes_what_it_changes_and_reads_anew():
    """The digest a function first had its closure hashed with stays in this process: a
    copy pickled to another (a dask worker, a joblib one) took it along in its
    ``__dict__``, and was served the result of the value it had before a change."""
    import cloudpickle

    namespace: dict[str, object] = {"__name__": "__main__"}  # (a notebook's, a script's)
    exec(textwrap.dedent("""
        def make(cfg):
            def scaled():
                cfg.setdefault("runs", 0)
                return cfg["scale"] * 10
            return scaled
    """), namespace)
    step = namespace["make"]({"scale": 2})  # type: ignore[operator]
    first = code_digest(step)
    assert code_digest(cloudpickle.loads(cloudpickle.dumps(step))) == first  # (a copy)
    step.__closure__[0].cell_contents["scale"] = 3  # type: ignore[index]
    elsewhere = cloudpickle.loads(cloudpickle.dumps(step))
    assert code_digest(elsewhere) != first


def test_a_closure_it_only_changes_or_sets_by_nonlocal_is_its_state():
    """``seen.append(x)`` alone, and ``nonlocal count; count += 1``: what the function
    keeps, keyed by name whatever it holds."""
    def make(seen, count):
        def work(x):
            nonlocal count
            seen.append(x)
            count += 1
            return x + count
        return work

    assert code_digest(make([], 0)) == code_digest(make([1, 2, 3], 5))


def test_a_global_an_augmented_assignment_changes_an_item_or_attribute_of_is_state():
    """``stats["calls"] += 1`` and the like: what the function keeps, not its input; a
    global it only reads, or uses for something else than such a target, is input."""
    from dagnb.fingerprint.walker import changed_globals

    def work(x):
        stats["calls"] += 1  # noqa: F821
        hits[0] += 1  # noqa: F821
        counter.n -= 1  # noqa: F821
        tally[x, "k"] *= 2  # noqa: F821
        totals[helper(x)] |= {x}  # noqa: F821
        stats_by["city"][x] += 1  # noqa: F821
        model.layer.calls += 1  # noqa: F821
        (offset + x)[0] += 1  # noqa: F821
        return read["calls"] + other.n + (0 < low < 5) + (base == x)  # noqa: F821

    assert changed_globals(work.__code__) == {
        "stats", "hits", "counter", "tally", "totals", "stats_by", "model"}


NAMESAKES = """
    from pathlib import Path

    name = "alice"  # a notebook's variables, named as the attributes and the import below
    mean = 2.0
    json = "not the module"

    def describe(path, frame):
        import json
        return json.dumps([Path(path).name, float(frame.a.mean())])

    def greet():
        return "hi " + name
"""


def test_a_global_named_as_an_attribute_or_an_import_of_the_code_is_not_its_input(
        tmp_path, monkeypatch):
    """``src.name``, ``frame.a.mean()``, ``import json``: ``co_names`` holds attribute
    and import names too, and a global of that name was taken as read (its change: "code
    changed", a run for nothing); a global the code loads still counts by its value."""
    module = _module(tmp_path, monkeypatch, "namesakes", NAMESAKES)
    before = {f: code_digest(getattr(module, f)) for f in ("describe", "greet")}
    described = code_source_parts(module.describe)
    assert fingerprint.global_values(module.describe) == {}
    module.name, module.mean, module.json = "bob", 2.5, "another"
    assert code_digest(module.describe) == before["describe"]
    assert code_source_parts(module.describe) == described
    assert code_digest(module.greet) != before["greet"]
    assert fingerprint.global_values(module.greet) == {"name": "bob"}


def test_a_value_nested_too_deep_is_a_fingerprint_error_not_a_crash():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(FingerprintError, match="nests too deep to fingerprint"):
        value_digest(deep)


@dataclasses.dataclass
class _Settings:
    scale: int


def test_a_dataclass_keeps_its_lines_when_exec_text_is_in_linecache(monkeypatch):
    """A spawned worker on Python 3.13 has ``python -c``'s text in linecache under
    ``<string>``, the file of a dataclass's made methods: they are still Python's."""
    from dagnb.fingerprint.sources import _class_lines

    found = _class_lines(_Settings)
    text = "from multiprocessing.spawn import spawn_main; spawn_main()\n"
    monkeypatch.setitem(linecache.cache, "<string>", (len(text), None, [text], "<string>"))
    assert found is not None and _class_lines(_Settings) == found


def test_a_closures_container_counts_by_content_unless_the_function_changes_it():
    def make(settings):
        def scaled(x):
            return x * settings["k"]
        return scaled

    assert code_digest(make({"k": 2})) != code_digest(make({"k": 3}))
    assert code_digest(make({"k": 2})) == code_digest(make({"k": 2}))

    def counting(calls):
        def count(x):
            calls.append(x)  # (its state: the counters joblib's examples keep)
            return x
        return count

    assert code_digest(counting([])) == code_digest(counting([1, 2]))


CUTOFF = 5
example = "a host"


def _queried() -> tuple[str, str]:
    return "v > @CUTOFF", "write to user@example.com"  # (pandas' query/eval read @CUTOFF)


def test_a_string_s_at_name_counts_as_a_read_of_the_global_but_an_address_does_not(
        monkeypatch) -> None:
    before = code_digest(_queried)
    monkeypatch.setitem(globals(), "example", "another host")
    assert code_digest(_queried) == before  # (user@example: an address, not a read)
    monkeypatch.setitem(globals(), "CUTOFF", 2)
    assert code_digest(_queried) != before



def test_stat_cache_sees_a_file_changed_with_its_size_mtime_and_inode_put_back(
        tmp_path, monkeypatch):
    """``tar x`` of a reproducible archive (or ``cp -p``): other bytes of the same size,
    the mtime set back, the inode reused. Only the ctime, which no tool sets back,
    moved: the old digest was served, and a mounted file's step with it."""
    fingerprint.configure_stat_cache(tmp_path / "stat-cache.json")
    path = tmp_path / "data.csv"
    path.write_text("1,10\n")
    os.utime(path, (1_600_000_000, 1_600_000_000))  # (outside the racy window)
    before = path_digest(path)
    inode = path.stat().st_ino
    time.sleep(0.01)  # (a ctime of its own, on a coarse clock too)
    with open(path, "r+") as handle:  # in place: the same inode
        handle.write("1,99\n")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    assert path.stat().st_ino == inode and path.stat().st_size == 5
    assert path_digest(path) != before
    assert path_digest(path) == path_digest(path, use_stat_cache=False)
