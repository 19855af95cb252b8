"""Print the requirements of the oldest- and newest-Python legs, one a line: dagnb's own
and the dev extra's, but for what none of the legs' tests use (the notebook server and
the browser, dask, the S3 stack, the linters, plotting), plus fsspec (a store URL's
``file://`` tests).

Two reasons. Those legs test what users of that Python get: botocore, which the S3 stack
brings, pins python-dateutil below 3, which no user without it has; pandas 2 (Python
3.10's) with dateutil 3 turned every time in the frames naive, which the legs missed
until they stopped installing it (2026-12-07). And each leg's environment installs in
half the time (3.10: 42 s against 93 s), with CI's two cores busy throughout."""

import tomllib

NOT_USED = ("matplotlib", "dask", "distributed", "s3fs", "moto", "ruff", "import-linter",
            "jupyterlab", "playwright", "pytest-xdist")

with open("pyproject.toml", "rb") as handle:
    project = tomllib.load(handle)["project"]
dev = project["optional-dependencies"]["dev"]
print("\n".join([*project["dependencies"],
                 *(line for line in dev if not line.startswith(NOT_USED)), "fsspec"]))
