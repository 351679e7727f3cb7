from harness.exits import run_and_exit
from harness.sweep.cli import main

run_and_exit(main)
