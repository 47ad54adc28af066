"""Where a server spends its time under load: ``py-spy record`` while wrk runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .server import Server

TOP = 15


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile(
    server: Server, load: Callable[[], object], seconds: int
) -> dict[str, list[tuple[str, float]]]:
    """Sample ``server`` for ``seconds`` s while ``load()`` runs in a thread.

    Returns the functions with the most samples on top of the stack (``self``) and the
    asgistream functions with the most samples anywhere in the stack (``inclusive``), each
    as a share of all samples.
    """
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed")
    worker = threading.Thread(target=load)
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "profile.txt"
        worker.start()
        try:
            subprocess.run(
                [
                    executable,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(output),
                ],
                check=True,
                capture_output=True,
                timeout=seconds + 30,
            )
        finally:
            worker.join()
        return summarize(output.read_text())


def summarize(collapsed: str) -> dict[str, list[tuple[str, float]]]:
    """Top functions by self and by inclusive (asgistream only) share of samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            if "asgistream/" in frame:
                inclusive[frame] += count
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "self": [(name, n / total) for name, n in own.most_common(TOP)],
        "inclusive": [(name, n / total) for name, n in inclusive.most_common(TOP)],
    }


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` without the line number, so lines of one function add up."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name
