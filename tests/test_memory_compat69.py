"""``dagnb.Memory`` as code written for ``joblib.Memory`` uses it: a cached function set in
a class body (``_read = memory.cache(read_csv)``), or over ``@staticmethod``, is not given
the instance it is called through (methods defined there still are); a bound method cached
on its own object (``self.fit_cached = memory.cache(self.fit)``) warns of nothing of
dagnb's; joblib's positional ``backend``, ``ignore`` and its ``compress`` and
``backend_options`` are taken or refused in one line; a generator argument is advised
to be passed as a list, not left out of the key."""

from __future__ import annotations

import threading
import warnings

import pytest

from dagnb.cache.memory import Memory
from dagnb.errors import ConfigError, FingerprintError

LOCK = threading.Lock()


def read_csv_slow(path, sep=","):
    CALLS.append(path)
    return path.upper() + sep


CALLS: list[str] = []


@pytest.fixture(autouse=True)
def _no_calls():
    CALLS.clear()


def test_a_function_cached_in_a_class_body_is_not_given_the_instance(tmp_path):
    memory = Memory(tmp_path / "cache")

    class Dataset:
        _read = memory.cache(read_csv_slow)
        _read_semicolons = memory.cache(ignore=["sep"])(read_csv_slow)

        def __init__(self, path):
            self.data = self._read(path)  # (dagnb gave it the Dataset: 'too many')
            self.semicolons = self._read_semicolons(path, sep=";")

    assert Dataset("train.csv").data == "TRAIN.CSV,"  # (not read_csv_slow(obj, path))
    assert Dataset("train.csv").semicolons == "TRAIN.CSV;"
    assert Dataset._read("train.csv") == "TRAIN.CSV,"
    assert CALLS == ["train.csv", "train.csv"]  # (one run each, the rest hits)
    assert Dataset._read.check_call_in_cache("train.csv")


def test_a_cached_staticmethod_is_not_given_the_instance(tmp_path):
    memory = Memory(tmp_path / "cache")

    class Featurizer:
        @memory.cache
        @staticmethod
        def embed(text):
            CALLS.append(text)
            return len(text)

        def transform(self, texts):
            return [self.embed(t) for t in texts]

    assert Featurizer.embed("abc") == 3
    assert Featurizer().transform(["a", "bb", "abc"]) == [1, 2, 3]
    assert CALLS == ["abc", "a", "bb"]


def test_a_method_cached_in_its_class_body_still_takes_its_object(tmp_path):
    memory = Memory(tmp_path / "cache")

    class Model:
        def __init__(self, k):
            self.k = k

        @memory.cache
        def fit(self, x):
            CALLS.append(x)
            return self.k + x

        @memory.cache(ignore=["verbose"])
        def score(self, x, verbose=False):
            return self.k * x

    assert (Model(1).fit(2), Model(10).fit(2), Model(1).fit(2)) == (3, 12, 3)
    assert CALLS == [2, 2]
    assert Model(3).score(2, verbose=True) == 6


def test_a_cached_function_set_on_a_class_later_says_how_to_set_it(tmp_path):
    memory = Memory(tmp_path / "cache")

    class Dataset:
        def __init__(self, path):
            self.data = self._read(path, ",", "extra")

    Dataset._read = memory.cache(read_csv_slow)
    with pytest.raises(TypeError, match=r"Dataset\._read = staticmethod\(memory\.cache\("
                                        r"read_csv_slow\)\)"):
        Dataset("train.csv")


class _Estimator:
    def __init__(self, memory, k):
        self.k = k
        self.fit_cached = memory.cache(self.fit)

    def fit(self, x):
        CALLS.append(x)
        return self.k + x


def test_a_bound_method_cached_on_its_object_warns_of_nothing_of_dagnbs(tmp_path):
    memory = Memory(tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = _Estimator(memory, 1)
        assert (estimator.fit_cached(1), estimator.fit_cached(1)) == (2, 2)
        assert _Estimator(memory, 5).fit_cached(1) == 6  # (its object's state counts)
    # (it warned twice, of closure variables 'keys' and 'self' of dagnb's wrapper)
    assert [str(w.message) for w in caught] == []
    assert CALLS == [1, 1]
    assert estimator.fit_cached.check_call_in_cache(1)
    assert str(estimator.fit_cached.__signature__) == "(x)"


class _Locked:
    def __init__(self, memory):
        self.fit_cached = memory.cache(self.fit)

    def fit(self, x):
        with LOCK:  # (a global no hash takes: counted by its type, with a warning)
            return x


def test_a_bound_method_s_real_warning_names_the_user_s_line(tmp_path):
    memory = Memory(tmp_path / "cache")
    locked = _Locked(memory)
    with pytest.warns(UserWarning, match="global 'LOCK'") as caught:
        locked.fit_cached.call(1)  # (its stacklevel named the caller's caller's line)
    assert [w.filename for w in caught] == [__file__]


def test_joblib_s_positional_backend_is_refused_naming_the_keyword(tmp_path):
    with pytest.raises(ConfigError) as refused:
        Memory(tmp_path / "cache", "local")
    message = str(refused.value)
    assert "second positional argument is ttl" in message
    assert "backend='local'" in message and "\n" not in message
    with pytest.raises(ConfigError, match="second positional argument is ttl"):
        Memory(tmp_path / "cache", object())
    with pytest.raises(ConfigError, match=r"^ttl '1x' is not a duration"):  # (mistyped)
        Memory(tmp_path / "cache", "1x")
    assert Memory(tmp_path / "cache", "1d", backend="local").store is not None


def test_a_ttl_word_that_names_no_backend_is_refused_as_a_duration(tmp_path):
    # (by keyword as often as not: no talk of positional arguments or of joblib)
    for word in ("forever", "bogus"):
        with pytest.raises(ConfigError) as refused:
            Memory(tmp_path / "cache", ttl=word)
        message = str(refused.value)
        assert message.startswith(f"ttl {word!r} is not a duration"), message
        assert "'never'" in message and "positional" not in message
    assert not (tmp_path / "cache").exists()  # (refused before anything was made)


def test_joblib_s_positional_ignore_is_taken(tmp_path):
    memory = Memory(tmp_path / "cache")
    cached = memory.cache(read_csv_slow, ["sep"])
    assert (cached("a", ","), cached("a", ";")) == ("A,", "A,")
    assert CALLS == ["a"]
    with pytest.raises(ConfigError, match=r"^ignore=1 is not a list of parameter names "
                                          r"\(memory\.cache's second positional"):
        memory.cache(read_csv_slow, 1)


def test_joblib_s_compress_and_backend_options_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^Memory\(compress=3\): dagnb does not "
                                          r"compress .*; drop the argument$"):
        Memory(tmp_path / "cache", compress=3)
    with pytest.raises(ConfigError, match=r"take no options.*drop the argument$") as refused:
        Memory(tmp_path / "cache", backend_options={"secret_key": "hunter2"})
    assert "hunter2" not in str(refused.value)
    # what dagnb does anyway (joblib's defaults, written out) passes
    assert Memory(tmp_path / "cache", compress=False, backend_options=None).store is not None


def test_a_generator_argument_is_advised_as_a_list_not_ignored(tmp_path):
    memory = Memory(tmp_path / "cache")

    @memory.cache
    def total(xs, lock=None):
        return sum(xs)

    with pytest.raises(FingerprintError) as refused:
        total(x for x in range(3))
    message = str(refused.value)
    assert "pass plain data instead, such as a list" in message
    assert "ignore=['xs']" not in message
    with pytest.raises(FingerprintError, match=r"ignore=\['lock'\]"):  # (no input: ignore)
        total([1], threading.Lock())
