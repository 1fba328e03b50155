"""``python -m anytalker_core``: the command line (:mod:`anytalker_core.cli`)."""

import sys


def _run() -> int:
    try:
        from .cli import main  # imports torch: Ctrl-C here must not end in a traceback either
    except KeyboardInterrupt:
        sys.stderr.write("\ncancelled: nothing was written\n")
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(_run())
