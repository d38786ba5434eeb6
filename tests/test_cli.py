"""What a newcomer meets first: the version, every command's help, the scripts, the install
hints and `make install`'s choice of torch."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hat
from hat.cli import COMMANDS, HelpFormatter, build_parser, main
from hat.errors import DISTRIBUTION, install_hint

ROOT = Path(__file__).resolve().parent.parent


def test_version(capsys):
    assert re.fullmatch(r"\d+\.\d+\.\d+", hat.__version__)
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert hat.__version__ in capsys.readouterr().out


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser (`prepare text` and the like included), by its command line."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if name:
            out[name] = parser
        for action in subs:
            for sub_name, sub in action.choices.items():
                walk(sub, f"{name} {sub_name}".strip())
    walk(build_parser(), "")
    return out


PARSERS = _parsers()


def test_every_command_is_reachable():
    names = {n.split()[0] for n in PARSERS}
    assert len(names) == len(COMMANDS) and "average-checkpoints" in names and "prepare sample" in PARSERS


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_shows_defaults_and_an_example(name):
    parser = PARSERS[name]
    assert parser.formatter_class is HelpFormatter
    text = parser.format_help()
    assert re.search(r"examples:\n  (hat|#)", text), f"`hat {name} --help` gives no example"
    shown = HelpFormatter("hat")
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in shown._get_help_string(action), f"`hat {name}` {action.option_strings[0]}"


def test_search_help_explains_the_evolution():
    parser = PARSERS["search"]
    helps = {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}
    assert "parents + mutations + crossovers" in helps["--population"]
    for flag, hat_value in (("--population", "125"), ("--parents", "25"), ("--mutations", "50"),
                            ("--crossovers", "50"), ("--iterations", "30")):
        assert f"HAT: {hat_value}" in helps[flag] and "default" in helps[flag], flag
    assert "population + iterations x (mutations + crossovers)" in helps["--iterations"]
    assert "(default 125)" in " ".join(parser.format_help().split())


SCRIPTS = {"train.py": "train", "search.py": "search", "measure_latency.py": "measure",
           "train_predictor.py": "fit-predictor", "export.py": "export", "evaluate.py": "evaluate"}


@pytest.mark.parametrize("script,command", sorted(SCRIPTS.items()))
def test_repo_root_scripts_name_their_subcommand(script, command):
    src = (ROOT / script).read_text()
    assert f"`hat {command} ARGS`" in src.split('"""')[1]
    assert f'run_as_script("{command}")' in src and '__name__ == "__main__"' in src


def test_install_hints_name_the_real_distribution():
    """The index's `hat` is another project: hints and metadata use the distribution's name."""
    assert install_hint("onnx") == f"pip install '{DISTRIBUTION}[onnx]'"
    assert re.search(rf'^name = "{DISTRIBUTION}"$', (ROOT / "pyproject.toml").read_text(), re.M)
    wrong = re.compile(r"""install\s+['"]?hat\[|pip install hat\b(?!-)""")
    files = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".toml", ".txt", ".yaml", ".cfg")
             and ".venv" not in p.parts and "sample-de-en" not in p.parts and p.is_file()]
    offenders = [str(p.relative_to(ROOT)) for p in files if wrong.search(p.read_text(errors="replace"))
                 and p.name != "test_cli.py"]
    assert not offenders


# ------------------------------------------------------------------------------------------ make install
@pytest.fixture
def fake_checkout(tmp_path) -> Path:
    """The Makefile with a stand-in .venv whose python prints what it is asked to do."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "requirements.txt", "requirements-extras.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    py = tmp_path / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text('#!/bin/sh\necho "PY $*"\n')
    py.chmod(0o755)
    return tmp_path


def _make(where: Path, *args: str) -> str:
    r = subprocess.run(["make", "-s", "install", *args], cwd=where, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_make_install_remembers_the_torch_choice(fake_checkout):
    first = _make(fake_checkout)
    assert "install -q torch==2.13.0" in first.replace('"', "")
    assert _make(fake_checkout) == ""  # same choice: nothing to do
    other = _make(fake_checkout, "TORCH=torch==2.12.0")
    assert "install -q torch==2.12.0" in other.replace('"', "")
    assert _make(fake_checkout, "TORCH=torch==2.12.0") == ""
    cuda = _make(fake_checkout, "TORCH=torch==2.12.0", "TORCH_INDEX=https://download.pytorch.org/whl/cu128")
    assert "--index-url https://download.pytorch.org/whl/cu128" in cuda


def test_make_quick_target_runs_the_quick_demo():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    r = subprocess.run(["make", "-n", "quick"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and ".venv/bin/hat demo --quick" in r.stdout


def test_scripts_run_as_their_command():
    r = subprocess.run([sys.executable, "train_predictor.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "fit-predictor" in r.stdout


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_examples_parse(name):
    """The examples in `--help` are commands that parse (flags, recipes and overrides resolve)."""
    from test_readme import _commands, check_command

    epilog = PARSERS[name].epilog or ""
    cmds = _commands(epilog.split("examples:", 1)[1])
    assert cmds
    for cmd in cmds:
        check_command(cmd)
