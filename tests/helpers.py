"""What several test modules share (imported as `helpers`: pytest puts this folder on sys.path)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kill_at_first_checkpoint(cmd: list[str], save_dir: Path, timeout_s: float = 300) -> int:
    """Start the training command `cmd` in the repository root, wait until it has written
    `save_dir/checkpoint_last.pt` (or exited, or `timeout_s` passed), SIGKILL it and return its
    exit status (`-signal.SIGKILL` when the kill found it running). The wait is long: on a loaded
    machine starting torch alone can take a minute, and a fast run ends it at once."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + timeout_s
    while not (save_dir / "checkpoint_last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()
