"""`python -m metalform.cli`: the same as the `metalform` command."""

import sys

from metalform.cli import main

sys.exit(main())
