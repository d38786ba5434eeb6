"""`python train.py ARGS` == `hat train ARGS` (fairseq-style entry point)."""
from hat.cli import run_as_script

if __name__ == "__main__":
    run_as_script("train")
