"""Record a running server with py-spy and say where its Python time goes.

Used by bench/accept.py --profile. py-spy runs with --gil: it samples only the thread
holding the GIL, so the shares are of Python-level CPU time. Without --gil, on a
server pinned to one core, threads that are runnable but waiting for that core (and
aiosqlite's worker threads blocked on their queue) are counted as busy, which
inflates them several times over. SQLite's own C work runs without the GIL and does
not show here; accept.py's per-thread CPU line accounts for it.

py-spy's raw output is one line per distinct stack, "frame;frame;...;frame count",
outermost first; with --threads the first frame names the thread.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

# "function (package/module.py:123)": paths are relative to sys.path.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\d+\): (?:Thread-\d+ )?(?P<name>.*)$")
# The frame below which each event-loop callback or task step starts.
_EVENT_LOOP = "Runner.run (runners.py)"
# GIL held with no Python frame on the stack: interpreter or extension C code.
_NO_FRAME = "(no Python frame)"

Stack = tuple[list[str], int]


def record(pid: int, seconds: int, output: Path, prefix: list[str]) -> None:
    """Sample `pid` for `seconds` (blocking); raise if py-spy is missing or fails.
    PYSPY_FLAGS adds py-spy options (e.g. --nonblocking; see bench/README.md)."""
    # pip puts py-spy next to the venv's python, which need not be on PATH.
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    command = [
        *prefix, py_spy, "record", "--pid", str(pid), "--duration", str(seconds),
        "--rate", "200", "--gil", *os.environ.get("PYSPY_FLAGS", "").split(), "--threads", "--format", "raw", "--output", str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr.strip()[-500:]}")


def _stacks(raw: Path) -> list[Stack]:
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _thread(frames: list[str]) -> str:
    # Thread ids and Thread-N counters differ between threads doing the same job.
    match = _THREAD.match(frames[0])
    return match["name"] if match else frames[0]


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({Path(match['path']).name})"


def _package(frames: list[str]) -> str:
    """The top-level package or module of the innermost frame (self time)."""
    match = _FRAME.match(frames[-1])
    if match is None:
        return _NO_FRAME
    return match["path"].split("/", 1)[0].removesuffix(".py") or "?"


def _leaf(frames: list[str]) -> str:
    return _function(frames[-1]) if len(frames) > 1 else _NO_FRAME


def _entry(frames: list[str]) -> str:
    """The task or callback the event loop was running: the frame right below it.

    SQLAlchemy's asyncio layer runs each statement in a greenlet, whose stack starts
    afresh (no awaiting coroutine above it), so that time shows as its own entry.
    """
    names = [_function(frame) for frame in frames[1:]]
    if _EVENT_LOOP in names:
        below = names[names.index(_EVENT_LOOP) + 1:]
        return below[0] if below else "(event loop's own C code: uvloop, sockets)"
    if len(frames) > 1 and "(sqlalchemy/" in frames[1]:
        return "(SQLAlchemy in a greenlet: connect, compile, bind, execute, fetch, close)"
    return names[0] if names else _NO_FRAME


def summarize(raw: Path, top: int = 12) -> str:
    stacks = _stacks(raw)
    total = sum(count for _, count in stacks)
    if total == 0:
        return "py-spy recorded no samples with the GIL held"
    views: list[tuple[str, Callable[[list[str]], str]]] = [
        ("GIL held by thread", _thread),
        ("by what the event loop was running (inclusive)", _entry),
        ("self time by package", _package),
        ("self time by function", _leaf),
    ]
    lines = [f"py-spy --gil: {total} samples of Python-level CPU"]
    for title, key in views:
        counts: Counter[str] = Counter()
        for frames, count in stacks:
            counts[key(frames)] += count
        lines.append(f"  {title}:")
        lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in counts.most_common(top)]
    return "\n".join(lines)
