"""``python -m diga ...`` is the ``diga`` command."""

import sys

from diga.cli import main

sys.exit(main())
