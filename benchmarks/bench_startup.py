"""Start-up: ``import dagnb`` and ``dagnb run`` of the cached example, fresh processes.

    python benchmarks/bench_startup.py [--quick] [--baseline REV]

- import_dagnb          ``import dagnb`` vs ``import yaml`` + ``import tenacity`` (<= 1.3),
                        and vs ``import pandas`` (information); lists the heavy
                        packages ``import dagnb`` brought along
- dagnb_run_cached      wall time of ``dagnb run workflows/example_workflow.yml`` when
                        every step is cached, vs the same command with dagnb as of
                        ``--baseline`` (the commit issue #16 measured; target <= 0.5)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import (
    BENCH_DIR,
    Figure,
    byte_compiled,
    child,
    column,
    interleave,
    machine_note,
    report,
    wall,
)

REPO = BENCH_DIR.parent
EXAMPLE = REPO / "workflows" / "example_workflow.yml"
BASELINE = "4d6a340"  # main as issue #16 measured it: `import dagnb` still loaded pandas
LAUNCH = "import sys; from dagnb.cli import main; sys.argv[0] = 'dagnb'; sys.exit(main())"


def import_figures(rounds: int) -> None:
    samples = interleave(
        {
            "dagnb": child("import_time", ["dagnb"]),
            "yaml+tenacity": child("import_time", ["yaml", "tenacity"]),
            "pandas": child("import_time", ["pandas"]),
        },
        rounds,
    )
    heavy = sorted({name for sample in samples["dagnb"] for name in sample["heavy"]})
    ours = column(samples["dagnb"], "seconds")
    report(Figure("import_dagnb", ours, column(samples["yaml+tenacity"], "seconds"),
                  "import yaml+tenacity", 1.3,
                  note=f"(fresh process each; also loaded: {', '.join(heavy) or 'none'})"))
    report(Figure("import_dagnb_vs_pandas", ours, column(samples["pandas"], "seconds"),
                  "import pandas", None))


def run_figure(tmp: Path, rounds: int, baseline: str) -> None:
    """The cached example run, this tree's dagnb against the baseline's, each in its own
    folder (their cache formats may differ)."""
    base_tree = _extract(baseline, tmp / "baseline")
    if base_tree is None:
        print(f"dagnb_run_cached: skipped, cannot extract {baseline!r} with git archive")
        return
    byte_compiled(base_tree / "dagnb")  # (as this tree's: see byte_compiled)
    trials = {}
    for name, tree in (("dagnb", REPO), ("baseline", base_tree)):
        folder = tmp / f"run-{name}"
        folder.mkdir()
        trials[name] = wall([sys.executable, "-c", LAUNCH, "run", str(EXAMPLE)], folder,
                            {"PYTHONPATH": str(tree)})
        trials[name]()  # fill this folder's cache: the figure is the all-cached run
    samples = interleave(trials, rounds)
    report(Figure("dagnb_run_cached", samples["dagnb"], samples["baseline"],
                  f"dagnb run at {baseline}", 0.5, note="(wall time, fresh process each)"))


def _extract(revision: str, folder: Path) -> Path | None:
    """The dagnb package as of ``revision``, unpacked into ``folder`` (no checkout)."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "dagnb"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 9")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare `dagnb run` to")
    args = parser.parse_args()
    print(machine_note())
    print(byte_compiled(BENCH_DIR.parent / "dagnb"))
    rounds = 5 if args.quick else 9
    import_figures(rounds)
    with tempfile.TemporaryDirectory(prefix="dagnb-bench-") as folder:
        run_figure(Path(folder), rounds, args.baseline)


if __name__ == "__main__":
    main()
