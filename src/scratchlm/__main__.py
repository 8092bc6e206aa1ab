"""`python -m scratchlm ...`: the same CLI as the `scratchlm` console script."""

import sys

from scratchlm.cli import main

sys.exit(main())
