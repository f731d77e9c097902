"""``python -m rawsys.trace``: the same as the ``rawsys-trace`` command."""

import sys

from rawsys.trace.cli import main

sys.exit(main())
