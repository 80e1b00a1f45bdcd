"""The tests' `missive` CLI commands, each in its own process forked from one that has
already imported the CLI.

A command run as `python -m missive ...` spends ~0.5 s of CPU importing (SQLAlchemy,
pydantic, typer, httpx) before it does anything; the suite runs hundreds of them, on a
2-core machine shared by its two passes. This process imports `missive.cli` once, then
forks a child for each command that connects to its Unix socket: the child is a fresh
process as far as the command can tell (its own environment, arguments, stdout and
stderr, exit code; nothing ran in the parent but the imports) and answers on its
connection. Forking costs a few milliseconds (measured: `missive account list` 0.72 s as
a new interpreter, ~0.03 s forked).

Protocol, one request per connection: the harness sends a JSON object (args, env) and
shuts its side for writing; the child answers a JSON object (returncode, stdout, stderr)
and exits.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import traceback

import orjson


def main(path: str) -> None:
    import missive.cli  # noqa: F401 - the imports every command would pay for, paid once

    # Children are reaped by the kernel: nothing here waits for them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _answer(conn)
            finally:
                os._exit(0)
        conn.close()


def receive_all(conn: socket.socket) -> bytes:
    """What the other side sends until it shuts its side (both ends of the protocol)."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(conn: socket.socket) -> None:
    request = orjson.loads(receive_all(conn))
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["missive", *request["args"]]
    sys.stdout, sys.stderr = out, err
    try:
        from missive.cli import main as cli_main

        cli_main()
        code: object = 0
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:  # noqa: BLE001 - as the interpreter would: a traceback, exit 1
        traceback.print_exc()
        code = 1
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if code is None:
        code = 0
    elif not isinstance(code, int):
        err.write(f"{code}\n")
        code = 1
    conn.sendall(orjson.dumps({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}))
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
