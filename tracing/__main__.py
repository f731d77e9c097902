"""``python -m tracing``: the same as the ``rawsys-trace`` command."""

import sys

from tracing.cli import main

sys.exit(main())
