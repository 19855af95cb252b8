"""The benchmark harness compares fairly: interleaved trials, medians, named verdicts.

No timing is asserted here: the trials are fakes that return fixed numbers.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import harness


def test_contenders_take_turns_round_by_round_with_a_collection_before_each(monkeypatch):
    calls = []
    monkeypatch.setattr(harness.gc, "collect", lambda: calls.append("gc"))

    def trial(name):
        return lambda: calls.append(name) or 1.0

    samples = harness.interleave({"a": trial("a"), "b": trial("b")}, rounds=5)

    assert calls == ["gc", "a", "gc", "b"] * 5
    assert samples == {"a": [1.0] * 5, "b": [1.0] * 5}


def test_fewer_than_five_rounds_are_refused():
    with pytest.raises(ValueError, match=r"rounds=4 is too few"):
        harness.interleave({"a": lambda: 1.0}, rounds=4)


def test_the_ratio_is_the_median_of_the_per_round_ratios():
    figure = harness.Figure("x", [2, 4, 9, 2, 3], [1, 2, 3, 1, 1], "peer", 2.5)

    assert figure.ratio == 2.0  # rounds: 2, 2, 3, 2, 3
    assert figure.met


def test_unpaired_samples_give_the_ratio_of_the_medians():
    figure = harness.Figure("x", [2, 4, 6, 8, 10], [1, 1, 3, 3, 3], "peer", 1.0, paired=False)

    assert figure.ratio == 2.0
    assert not figure.met


def test_a_line_names_both_contenders_the_ratio_the_target_and_the_verdict():
    figure = harness.Figure("hit", [3e-3] * 5, [1e-3] * 5, "joblib", 1.5, note="(cold)")

    assert figure.line() == (
        "hit: dagnb 3 ms, peer joblib 1 ms, ratio 3.00 (median of 5), target <= 1.5 MISSED"
        "  [min 3 ms / 1 ms = 3.00; within target in 0 of 5 rounds]  (cold)"
    )


def test_a_figure_of_bytes_shows_megabytes():
    figure = harness.Figure("held", [20 << 20] * 5, [10 << 20] * 5, "floor", 1.5, unit="B")

    assert figure.line() == (
        "held: dagnb 20 MB, peer floor 10 MB, ratio 2.00 (median of 5), target <= 1.5 MISSED"
        "  [min 20 MB / 10 MB = 2.00; within target in 0 of 5 rounds]"
    )


def test_a_line_says_in_how_many_rounds_the_ratio_was_within_the_target():
    figure = harness.Figure("x", [1.0, 3.0, 1.0, 1.6, 1.4], [1.0] * 5, "peer", 1.5)

    assert figure.rounds_met == 3  # 1.0, 1.0, 1.4 (not 3.0, 1.6)
    assert figure.line().endswith("= 1.00; within target in 3 of 5 rounds]")
    unpaired = harness.Figure("x", [1.0] * 5, [1.0] * 5, "peer", 1.5, paired=False)
    assert unpaired.rounds_met is None and "within target" not in unpaired.line()


def test_a_figure_without_a_target_is_shown_for_information():
    figure = harness.Figure("x", [2e-6] * 5, [4e-6] * 5, "dask", None)

    assert figure.met is None
    assert "ratio 0.50 (median of 5), (information)" in figure.line()


def test_a_timed_trial_returns_seconds_per_unit(monkeypatch):
    ticks = iter([10.0, 10.5])
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(ticks))

    seconds = harness.timed(lambda: None, repeat=5, per=10)()

    assert seconds == pytest.approx(0.01)


def test_the_disk_note_measures_in_the_folder_it_is_given_and_leaves_nothing(tmp_path):
    note = harness.disk_note(tmp_path, count=5)
    assert note.startswith("# disk: a file written and renamed in ")
    assert note.endswith("(medians of 5)") and note.count(" us") == 2
    assert list(tmp_path.iterdir()) == []  # its probe folder removed


def test_a_ratio_just_past_its_target_is_not_rounded_onto_it():
    missed = harness.Figure("x", [0.2504] * 5, [1.0] * 5, "peer", 0.25).line()
    met = harness.Figure("x", [0.2496] * 5, [1.0] * 5, "peer", 0.25).line()
    assert "ratio 0.2504 " in missed and "MISSED" in missed
    assert "ratio 0.25 " in met and " met " in met


def test_a_first_hit_is_timed_whole_and_in_its_two_parts(tmp_path):
    import workloads

    location = str(tmp_path / "cache")
    workloads.memory_fill("dagnb", location, 0, 3)

    timed = workloads.memory_cold("dagnb", location, 0, 3)

    assert set(timed) == {"first", "setup", "call", "rest"}
    assert timed["setup"] > 0 and timed["call"] > 0
    assert timed["setup"] + timed["call"] == pytest.approx(timed["first"], rel=1e-9)


needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning needs Linux's sched_setaffinity and two CPUs or more")


def _cpus_of(thread_id):
    return os.sched_getaffinity(thread_id)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@needs_affinity
def test_trials_run_on_one_cpu_every_thread_the_same_and_all_cpus_come_back():
    allowed = os.sched_getaffinity(0)
    seen, started, stop = [], threading.Event(), threading.Event()

    def elsewhere():  # a thread started before the trials: dagnb's loop thread is one
        seen.append(threading.get_native_id())
        started.set()
        stop.wait()

    other = threading.Thread(target=elsewhere)
    other.start()
    started.wait()
    try:
        samples = harness.interleave({
            "a": lambda: (_cpus_of(0), _cpus_of(seen[0])),
            "b": lambda: (_cpus_of(0), _cpus_of(seen[0])),
        }, rounds=5)
        after = (_cpus_of(0), _cpus_of(seen[0]))
    finally:
        stop.set()
        other.join()

    assert {tuple(map(frozenset, s)) for s in samples["a"] + samples["b"]} == {
        (frozenset({max(allowed)}),) * 2}
    assert after == (allowed, allowed)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@needs_affinity
def test_a_figure_of_processes_at_once_keeps_every_cpu(monkeypatch):
    allowed = os.sched_getaffinity(0)
    samples = harness.interleave({"a": lambda: _cpus_of(0)}, rounds=5, all_cpus=True)
    monkeypatch.setattr(harness, "PIN", False)  # run_all.py --all-cpus
    unpinned = harness.interleave({"a": lambda: _cpus_of(0)}, rounds=5)

    assert samples["a"] == unpinned["a"] == [allowed] * 5


def test_the_default_run_takes_the_issues_three_sizes_and_quick_leaves_out_the_largest():
    import run_all

    assert run_all.options([]).sizes == [1_000, 10_000, 100_000]
    assert run_all.options(["--quick"]).sizes == [1_000, 10_000]
    assert run_all.options(["--quick", "--sizes", "100000,1000"]).sizes == [1_000, 100_000]


def test_scheduling_at_a_hundred_thousand_steps_takes_the_fewest_rounds(monkeypatch, tmp_path):
    import bench_runner
    import workloads

    taken: dict[str, int] = {}
    monkeypatch.setattr(bench_runner, "compare",
                        lambda name, *args, **kwargs: taken.setdefault(name, args[4]))
    monkeypatch.setattr(workloads, "chain_graph", lambda n: None)
    monkeypatch.setattr(workloads, "fanout_graph", lambda n: None)
    monkeypatch.setattr(workloads, "chain_dask", lambda n: {"a": None})
    monkeypatch.setattr(workloads, "fanout_dask", lambda n: {"a": None})
    bench_runner.scheduling(tmp_path, 15, [1_000, 100_000])
    assert taken == {"scheduling_chain_1000": 15, "scheduling_fanout_1000": 15,
                     "scheduling_chain_100000": harness.MIN_ROUNDS,
                     "scheduling_fanout_100000": harness.MIN_ROUNDS}
