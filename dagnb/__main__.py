"""``python -m dagnb``: the ``dagnb`` command, where the script is not on the PATH."""

import sys

from dagnb.cli import main

sys.exit(main())
