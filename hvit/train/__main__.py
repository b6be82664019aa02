"""``python -m hvit.train``: see `hvit.train.cli`."""

import sys

from hvit.train.cli import main

sys.exit(main())
