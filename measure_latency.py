from hat.cli import run_as_script

run_as_script("measure")
