"""A throwaway PostgreSQL cluster on 127.0.0.1 for the test suite and the benchmarks.

    python -m tests.postgres run -- COMMAND...   start a cluster, run COMMAND with
                                                  MISSIVE_TEST_POSTGRES_URL set, stop it

The cluster lives in a temporary directory and is removed afterwards. PostgreSQL refuses
to run as root, so when we are root the server runs as the `postgres` user that Debian's
package creates. Durability settings are off: the tests kill Missive, never PostgreSQL.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise SystemExit("PostgreSQL is not installed (make test installs Debian's postgresql package)")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster; yield its URL (superuser `postgres`, trust auth on 127.0.0.1)."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="missive-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(data, user.pw_uid, user.pw_gid)
    port = _free_port()
    run = lambda argv: subprocess.run(_as_server_user(argv), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        options = " ".join([
            f"-p {port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={root}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=400", "-c shared_buffers=256MB",
        ])
        run([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"])
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, check=False)
        # Give the server a moment to release its files before they go.
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "run" or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1:]
    with cluster() as url:
        print(f"PostgreSQL test cluster at {url}", flush=True)
        return subprocess.run(command, env={**os.environ, "MISSIVE_TEST_POSTGRES_URL": url}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
