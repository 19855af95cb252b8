"""``python -m dagnb.cli``: the ``dagnb`` command."""

import sys

from dagnb.cli import main

sys.exit(main())
