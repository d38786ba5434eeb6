"""`python measure_latency.py ARGS` == `hat measure ARGS` (HAT's script name)."""
from hat.cli import run_as_script

if __name__ == "__main__":
    run_as_script("measure")
