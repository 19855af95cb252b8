"""pytest setup for the tutorials, which run under nbval (see notebooks/nbval-sanitize.cfg).

The kernels nbval starts are Jupyter kernels, so dagnb would draw its live status widget
there, and a widget's stored text (``StatusWidget(...)`` with model ids) changes from run
to run. ``DAGNB_WIDGETS=0`` makes dagnb print the plain-text view instead (log lines,
then the status table): what the notebooks' stored outputs hold. It is set here, at
import, because each kernel inherits pytest's environment when it starts.

Only the environment variable is set: tests that need widgets on or off set
``dagnb.widgets.ENABLED``, which takes precedence, so ``pytest tests/`` is unaffected.
"""

import os

os.environ["DAGNB_WIDGETS"] = "0"
