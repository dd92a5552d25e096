"""`python -m tracker`: the command line, as `face-tracker` and `run_tracker.py` run it."""

import sys

from tracker.launcher import main

if __name__ == "__main__":
    sys.argv[0] = "python -m tracker"  # argparse names the command after it (it would read '__main__.py')
    sys.exit(main())
