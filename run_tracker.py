#!/usr/bin/env python3
"""Face tracker command line; see `python run_tracker.py --help`."""

import sys

from tracker.launcher import main

if __name__ == "__main__":
    sys.exit(main())
