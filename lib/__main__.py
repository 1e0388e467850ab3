"""``python -m lib``: the command line (migrate, serve, drain, status, enqueue, cleanup, schedules)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
