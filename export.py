"""`python export.py ARGS` == `hat export ARGS`."""
from hat.cli import run_as_script

if __name__ == "__main__":
    run_as_script("export")
