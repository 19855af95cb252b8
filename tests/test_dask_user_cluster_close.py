"""A script that runs a dask step on its own ``LocalCluster`` and closes the cluster at
its end: dagnb's client, still connected, tried to reach the gone scheduler and, closed
as the script exited, logged a 30-line ``distributed.client - ERROR`` traceback of a
CancelledError under a run that had succeeded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("distributed")

SCRIPT = textwrap.dedent("""
    import dagnb
    from dask.distributed import LocalCluster

    def fit():
        return 42

    if __name__ == "__main__":
        cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None)
        dagnb.configure(dask_scheduler=cluster.scheduler_address)
        graph = dagnb.Graph("dk", [dagnb.Step("fit", func=fit, executor="dask")])
        run = graph.run(cache_directory=".dagnb_cache")
        print(run.states()["fit"], run.result("fit"))
        cluster.close()
""")


def test_closing_your_own_cluster_after_a_dask_step_logs_no_error(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "succeeded 42"
    assert "ERROR" not in done.stderr and "Traceback" not in done.stderr, done.stderr
