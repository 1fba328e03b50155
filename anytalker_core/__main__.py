"""``python -m anytalker_core``: the command line (:mod:`anytalker_core.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
