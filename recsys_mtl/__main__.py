"""``python -m recsys_mtl`` is the ``recsys-mtl`` command."""

import sys

from recsys_mtl.cli import main

sys.exit(main())
