"""GraphQL queries the Dagger executor sends per step, counted by the stub engine.

    python benchmarks/bench_dagger_queries.py

Runs a few step shapes through the real dagger-io client against the test stub
(tests/dagger_stub) and prints, per step: queries in all, ``sync`` queries, ``id``
round trips (an object argument resolved on its own) and the others. The first step
of a session also pays for the connection (introspection, version) and for its image
(its USER and the digest it resolved to, in one query per image and session); a step
that pins a new tag (``pin_images``) asks that query before its key is made, instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dagger_stub.fixtures import new_task
from dagger_stub.queries import calls
from dagger_stub.server import StubServer

from dagnb.executors.base import Input
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.loop import run_sync
from dagnb.model.step import Step


def kinds(texts: list[str]) -> dict[str, int]:
    """Queries by the field they end in: sync, id (an argument resolved by itself), other."""
    counts = {"sync": 0, "id": 0, "other": 0}
    for text in texts:
        chain = calls(text) if "IntrospectionQuery" not in text else [("__schema", {})]
        last = chain[-1][0]
        counts[last if last in counts else "other"] += 1
    return counts


def main() -> None:
    server = StubServer().start()
    os.environ.update(server.env())
    executor = DaggerExecutor()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        (root / "data" / "a.csv").write_text("1\n")
        steps = [
            ("connect+shell", Step("first", run="true"), {}),
            ("shell", Step("shell", run='echo hi > "$DAGNB_OUT/x"'), {}),
            ("shell+mount+cache+secret", Step("rich", run="true", mounts={"data": "/data"},
                                              cache_volumes={"pip": "/root/.cache/pip"},
                                              secrets=["T"]), {"T": "v"}),
        ]
        handles = {}
        print(f"{'step':28} {'queries':>7} {'sync':>5} {'id':>4} {'other':>6}")
        for label, step, secrets in [*steps, ("downstream (no upload)",
                                              Step("down", run="ls $DAGNB_IN", needs=["shell"]),
                                              {}),
                                     ("pin a new tag + shell", Step("pin", run="true",
                                                                    image="alpine:3.20"), {})]:
            inputs = {n: Input(n, root / n, handle=handles[n]) for n in step.needs}
            before = len(server.queries)
            if label.startswith("pin"):  # what the scheduler does with pin_images
                ref = run_sync(executor.image_ref(step.image))
                step = step.replace(image=f"{step.image}@{ref.rpartition('@')[2]}")
            task = new_task(root / "tasks", step, secrets=secrets, inputs=inputs, base_dir=root)
            outcome = run_sync(executor.execute(task))
            handles[step.name] = outcome.handle
            texts = [q.query for q in server.queries[before:]]
            counts = kinds(texts)
            print(f"{label:28} {len(texts):>7} {counts['sync']:>5} {counts['id']:>4} "
                  f"{counts['other']:>6}")
        run_sync(executor.aclose())
    server.stop()


if __name__ == "__main__":
    main()
