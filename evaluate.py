"""`python evaluate.py ARGS` == `hat evaluate ARGS`."""
from hat.cli import run_as_script

if __name__ == "__main__":
    run_as_script("evaluate")
