"""``python -m bioplaus``: the same command as ``bioplaus`` (:func:`bioplaus.cli.main`)."""

import sys

from bioplaus.cli import main

sys.exit(main())
