"""``python -m hvit.bench <model|train|explain|app|browser|classroom|space|figures> [options]``: dispatch to one
benchmark."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "model": "hvit.bench.model",
    "train": "hvit.bench.train",
    "explain": "hvit.bench.explain",
    "app": "hvit.bench.app",
    "browser": "hvit.bench.browser",
    "classroom": "hvit.bench.classroom",
    "space": "hvit.bench.space",
    "figures": "hvit.bench.figures",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m hvit.bench {{{','.join(BENCHES)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(BENCHES[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
