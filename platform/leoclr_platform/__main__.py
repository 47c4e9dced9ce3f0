"""`python -m leoclr_platform ...` is the same as the `leoclr` console script."""

import sys

from leoclr_platform.cli import main

sys.exit(main())
