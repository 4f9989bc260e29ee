"""`python -m netspec` runs the command line."""
import os
import sys

from netspec.cli import main

code = main()
if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
    from netspec.train.distributed import exit_worker

    exit_worker(code)
sys.exit(code)
