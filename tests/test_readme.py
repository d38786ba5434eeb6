"""The README's code blocks stay true: each is marked `<!-- readme-test: KIND -->` and tested.

* run: executed. Bash in the repository root, with `hat` on the PATH; Python in a scratch
  directory holding what `make quick` would have left there (the bundled sample prepared, a
  SuperTransformer checkpoint), so the example's paths are the ones a user has.
* check: for blocks that install, download, run for long or need GPUs. Every command is
  checked without running it: `hat`/repo-root scripts/`torchrun` lines parse with hat's own
  parser, `hat train` recipes and overrides resolve, make targets exist (`make -n`), pip extras
  exist, `python -c` code compiles.
* paths: a file listing; every `hat/...` path in it exists.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hat.cli import UsageError, build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARK = re.compile(r"<!-- readme-test: (run|check|paths)\b[^>]*-->\s*$")
SCRIPTS = {"train.py": "train", "search.py": "search", "measure_latency.py": "measure",
           "train_predictor.py": "fit-predictor", "export.py": "export", "evaluate.py": "evaluate"}


def readme_blocks() -> list[tuple[str, str, str, int]]:
    """(kind, language, code, line) of every fenced block; kind '' when it is not marked."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.match(before)
        out.append((mark.group(1) if mark else "", m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1))
    return out


BLOCKS = readme_blocks()


def _ids(kind: str, lang: str | None = None) -> list:
    return [pytest.param(code, id=f"{lng or 'text'}-line{line}") for k, lng, code, line in BLOCKS
            if k == kind and (lang is None or lng == lang)]


def test_every_block_is_marked_and_the_readme_has_them_all():
    assert len(BLOCKS) >= 7
    unmarked = [line for kind, _, _, line in BLOCKS if not kind]
    assert not unmarked, f"README blocks at lines {unmarked} lack a <!-- readme-test: run|check|paths --> mark"
    assert {k for k, *_ in BLOCKS} == {"run", "check", "paths"}


# ------------------------------------------------------------------------------------------ run
def _hat_on_path(tmp: Path) -> dict[str, str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "hat"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hat "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.parametrize("code", _ids("run", "bash"))
def test_run_bash_block(code, tmp_path):
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=ROOT, env=_hat_on_path(tmp_path),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for want in re.findall(r"^# (\w+ +[\d.]+ \w+)", code, re.M):  # output shown as a comment
        assert " ".join(want.split()) in " ".join(r.stdout.split()), r.stdout


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory) -> Path:
    """A directory laid out as `make quick` leaves it: data/sample.de-en (the bundled sample) and
    a SuperTransformer checkpoint of `hat train`'s format (a small space, briefly trained)."""
    from hat.data.prepare import prepare_sample
    from test_export import make_checkpoint

    tmp = tmp_path_factory.mktemp("quick")
    data = tmp / "data" / "sample.de-en"
    prepare_sample(data)
    ckpt = make_checkpoint(tmp, data, steps=2)
    dest = tmp / "runs" / "demo-quick" / "supertransformer" / "checkpoint_last.pt"
    dest.parent.mkdir(parents=True)
    shutil.move(ckpt, dest)
    return tmp


@pytest.mark.parametrize("code", _ids("run", "python"))
def test_run_python_block(code, quick_dir, monkeypatch, capsys):
    monkeypatch.chdir(quick_dir)
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})  # noqa: S102
    out = capsys.readouterr().out
    assert out.strip(), "the example prints its results"
    assert (quick_dir / "export" / "subnet" / "model.pt").is_file()


# ------------------------------------------------------------------------------------------ check
def _commands(code: str) -> list[list[str]]:
    """Shell commands of a block: continuation lines joined, comments dropped, split like a shell."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def _parse_hat(argv: list[str]) -> None:
    """Parse like `hat ARGV` does; a `hat train` line also resolves its recipe and overrides."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help / --version exit 0
        assert e.code == 0, f"`hat {' '.join(argv)}` does not parse"
        return
    except UsageError as e:  # a bad command line
        raise AssertionError(f"`hat {' '.join(argv)}` does not parse: {e}") from None
    if args.command == "train":
        from hat.commands.train import load_config

        load_config(args)


def check_command(cmd: list[str]) -> None:
    """Check one README command without running it (see the module docstring)."""
    head, rest = cmd[0], cmd[1:]
    if head in ("hat", ".venv/bin/hat"):
        _parse_hat(rest)
    elif head == "torchrun":
        script = next(a for a in rest if a.endswith(".py"))
        assert (ROOT / script).is_file()
        _parse_hat([SCRIPTS[script], *rest[rest.index(script) + 1:]])
    elif head in ("python", ".venv/bin/python") and rest[0] == "-c":
        compile(rest[1], "<readme>", "exec")
    elif head == "python":
        assert (ROOT / rest[0]).is_file(), rest[0]
        _parse_hat([SCRIPTS[rest[0]], *rest[1:]])
    elif head == "make":
        r = subprocess.run(["make", "-n", "-C", str(ROOT), *rest], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    elif head == "source":
        assert rest == [".venv/bin/activate"]  # what `python -m venv` (make install) creates
    elif head == "pip":
        table = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
        extras = re.findall(r"^(\w+) *=", table, re.M)
        for spec in rest:
            for extra in re.findall(r"\[(\w+)\]", spec):
                assert extra in extras, spec
    else:
        raise AssertionError(f"README command {' '.join(cmd)!r}: no rule to check it; add one to {__file__}")


@pytest.mark.parametrize("code", _ids("check"))
def test_check_block(code):
    cmds = _commands(code)
    assert cmds
    for cmd in cmds:
        check_command(cmd)


def test_check_refuses_a_wrong_command():
    with pytest.raises(AssertionError):
        check_command(["hat", "search", "--populaton", "4"])
    with pytest.raises(Exception, match="nonsense_key"):
        check_command(["torchrun", "--nproc_per_node", "8", "train.py", "--config", "wmt14.en-de", "nonsense_key=1"])
    with pytest.raises(AssertionError):
        check_command(["make", "no-such-target"])


# ------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("code", _ids("paths"))
def test_layout_paths_exist(code):
    named = re.findall(r"^(hat/[\w/.-]*)", code, re.M)
    assert len(named) >= 10
    for path in named:
        assert (ROOT / path).exists(), path
    for line in code.splitlines():  # `hat/errors.py, shipped.py, ...`: siblings of the first
        m = re.match(r"^(hat/(?:[\w-]+/)*)[\w.-]+\.py((?:, [\w.]+)+)", line)
        if m:
            for name in m.group(2).split(", ")[1:]:
                assert (ROOT / m.group(1) / name).exists(), name
    where = None
    for line in code.splitlines():  # `hat/train/ ... teacher (distill.py)`: modules named in an entry
        top = re.match(r"^(hat/(?:[\w-]+/)*)", line)
        where = top.group(1) if top else where
        for name in re.findall(r"\(([\w-]+\.py)\b", line):
            assert where and (ROOT / where / name).exists(), f"{where}{name}"


def test_results_table_has_a_row_per_kind_of_the_demo_summary():
    """The README's results table is the demo's summary: the same kinds, so it is filled, not invented."""
    from hat.commands.demo_report import KIND_ORDER

    text = README.read_text(encoding="utf-8")
    section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n| kind |", 1)[1].split("\n\n", 1)[0]  # the summary's table (others follow it)
    kinds = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert kinds == set(KIND_ORDER)
