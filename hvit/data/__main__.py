"""``python -m hvit.data shapes OUT [--train N] [--val N] [--test N] [--img-size S] [--seed K]``."""

import sys

from hvit.data.shapes import main

if __name__ == "__main__":
    if sys.argv[1:2] != ["shapes"]:
        sys.exit(
            "usage: python -m hvit.data shapes OUT [--train N] [--val N] [--test N] [--img-size S] [--seed K]"
        )
    main(sys.argv[2:])
