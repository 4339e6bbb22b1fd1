import sys

from bioplaus.cli import main

sys.exit(main())
