"""Values hash the same in every process: set subclasses by their members' digests and
dicts reached through pickle (a dataclass's, a Counter, a defaultdict) in key order, not
in the iteration order pickle follows, which the hash seed changes from process to
process (each missed the cache in every new process); and equal values alike whether
their equal texts are one object or two (pickle's memo told them apart)."""

from __future__ import annotations

import collections
import dataclasses
import json
import subprocess
import sys
import textwrap

from dagnb.fingerprint.values import value_digest

PROGRAM = textwrap.dedent("""
    import collections
    import dataclasses
    from dagnb.fingerprint.values import value_digest

    class Tags(frozenset):
        pass

    class Bag(set):
        pass

    @dataclasses.dataclass
    class Holder:
        tags: Tags

    @dataclasses.dataclass
    class Weights:
        weights: dict

    words = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}
    print(value_digest(Tags(words)), value_digest(Bag(words)),
          value_digest({"k": [Tags(words)]}), value_digest(Holder(Tags(words))),
          value_digest(Weights({w: 1.0 for w in words})),
          value_digest(collections.Counter(words)),
          value_digest(collections.defaultdict(float, {w: 1.0 for w in words})))
""")


def _digests_with_seed(seed: int) -> str:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                          env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"},
                          check=True)
    return done.stdout.strip()


def test_set_subclass_digests_are_the_same_whatever_the_hash_seed() -> None:
    seen = {_digests_with_seed(seed) for seed in (1, 2, 3, 4)}
    assert len(seen) == 1, seen
    assert len(seen.pop().split()) == 7


class Tags(frozenset):
    pass


def test_set_subclass_digest_follows_members_class_and_state() -> None:
    tags = Tags({"a", "b"})
    assert value_digest(tags) == value_digest(Tags({"b", "a"}))
    assert value_digest(tags) != value_digest(Tags({"a", "c"}))
    assert value_digest(tags) != value_digest(frozenset({"a", "b"}))
    labelled = Tags({"a", "b"})
    labelled.label = "x"
    assert value_digest(labelled) != value_digest(tags)


@dataclasses.dataclass
class Colors:
    names: list


def test_equal_texts_count_alike_whether_one_object_or_two() -> None:
    literal = Colors(["red", "red", "blue"])  # one "red" object twice
    loaded = Colors(json.loads('["red", "red", "blue"]'))  # two "red" objects
    assert literal.names[0] is literal.names[1]
    assert loaded.names[0] is not loaded.names[1]
    assert value_digest(literal) == value_digest(loaded)
    assert value_digest(literal) != value_digest(Colors(["red", "blue", "blue"]))


@dataclasses.dataclass
class Weights:
    weights: dict


def test_dicts_inside_objects_count_by_items_and_ordered_dicts_by_order() -> None:
    assert value_digest(Weights({"a": 1, "b": 2})) == value_digest(Weights({"b": 2, "a": 1}))
    assert value_digest(Weights({"a": 1, "b": 2})) != value_digest(Weights({"a": 1, "b": 3}))
    mixed = {1: "x", "1": "y", (2, 3): "z"}
    assert value_digest(Weights(mixed)) == value_digest(Weights(dict(reversed(mixed.items()))))
    first, second = collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1)
    assert value_digest(Weights(first)) != value_digest(Weights(second))  # order is content
    assert (value_digest(collections.defaultdict(int, a=1, b=2))
            != value_digest(collections.defaultdict(float, a=1, b=2)))


class Node:
    def __init__(self) -> None:
        self.links: dict = {}
        self.links["self"] = self.links  # a cycle through a dict
        self.me = self


def test_a_cycle_through_a_dict_still_hashes() -> None:
    node = Node()
    assert value_digest(node) == value_digest(Node())
    other = Node()
    other.links["more"] = 1
    assert value_digest(other) != value_digest(node)
