"""`python -m dfguard.cli`: the same command line as the `dfguard` script."""

import sys

from dfguard.cli import main

sys.exit(main())
