"""``python -m embedrt.cli``: the same as the ``embedrt`` command."""

import sys

from embedrt.cli import main

sys.exit(main())
