"""``python -m nmflowgan`` (and ``torchrun -m nmflowgan``) run the command line."""

import sys

from nmflowgan.cli import main

sys.exit(main())
