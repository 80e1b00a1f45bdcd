"""Record a running server with py-spy and say where its CPU time goes.

Used by bench/accept.py --profile. py-spy's raw output is one line per distinct stack,
"frame;frame;...;frame count", outermost first; idle samples are left out by py-spy,
so the shares below are of the time the process was busy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# "function (package/module.py:123)" as py-spy writes a frame (paths relative to
# sys.path); with --threads the first frame is "thread (tid): name".
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\d+\): (?:Thread-\d+ )?(?P<name>.*)$")


def record(pid: int, seconds: int, output: Path, prefix: list[str]) -> None:
    """Sample `pid` for `seconds` (blocking); raise if py-spy is missing or fails."""
    # pip puts py-spy next to the venv's python, which need not be on PATH.
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    command = [
        *prefix, py_spy, "record", "--pid", str(pid), "--duration", str(seconds),
        "--rate", "200", "--format", "raw", "--threads", "--output", str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr.strip()[-500:]}")


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _thread(frame: str) -> str:
    # Thread ids and Thread-N counters differ between threads doing the same job.
    match = _THREAD.match(frame)
    return match["name"] if match else frame


def _package(frame: str) -> str:
    """The top-level package or module a frame's code belongs to."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return match["path"].split("/", 1)[0].removesuffix(".py") or "?"


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({Path(match['path']).name})"


def summarize(raw: Path, top: int = 15) -> str:
    """Self time by package and by function, and how the samples split between threads."""
    stacks = _stacks(raw)
    total = sum(count for _, count in stacks)
    if total == 0:
        return "py-spy recorded no busy samples"
    by_thread: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for frames, count in stacks:
        by_thread[_thread(frames[0])] += count
        by_package[_package(frames[-1])] += count
        by_function[_function(frames[-1])] += count
    lines = [f"py-spy: {total} busy samples"]
    for title, counter in (("thread", by_thread), ("self time by package", by_package),
                           ("self time by function", by_function)):
        lines.append(f"  {title}:")
        lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)
