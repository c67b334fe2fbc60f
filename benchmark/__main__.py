"""``python -m benchmark`` is the ``layerfuse`` command."""

import sys

from benchmark.cli import main

sys.exit(main())
