"""Accept-path benchmark: POST /v1/messages on Missive against a bare ASGI endpoint.

Provisions a fresh data directory (SQLite), starts `missive serve` and then
bench/bare_app.py on 127.0.0.1, drives each with wrk (keep-alive connections, the
same JWT-authenticated SMS), and prints accepted requests/s, latency and the
missive/bare ratio. Afterwards the messages table must hold exactly one row per 202.

Exit status: 0 when both servers ran and the durability check held; 1 when a server
failed or the check did not hold; 2 when a tool is missing. Missing a target is
reported, not an error.

    .venv/bin/python bench/accept.py [--duration 20] [--connections 64] [--profile 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import jwt
import pyspy_summary  # bench/, on sys.path as this script's directory

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "accept.lua"
HOST = "127.0.0.1"
PATH = "/v1/messages"
SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme",
       "text": "Hello from the bench"}

TARGET_RPS = 5_000
TARGET_P99_MS = 50.0
TARGET_RATIO = 0.5
# Cores used by other processes during a run above which its figures are flagged.
NOISY_NEIGHBOURS = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchFailure(Exception):
    """A server failed, or the numbers cannot be trusted."""


# --- tools and CPUs ------------------------------------------------------------------


def ensure_wrk() -> str:
    """Path to wrk; installs the Debian package when running as root with apt-get."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is not installed: trying `apt-get install -y wrk`", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if found is None:
        print("wrk is needed: `sudo apt-get install wrk` (Debian/Ubuntu), `brew install wrk`, "
              "or build https://github.com/wg/wrk", file=sys.stderr)
        sys.exit(2)
    return found


@dataclass(frozen=True)
class Pinning:
    server: list[str]  # command prefix for the server under test
    load: list[str]  # command prefix for wrk (and py-spy)
    note: str


def plan_pinning(pin: bool = True) -> Pinning:
    if not pin:
        return Pinning([], [], "not pinned (--no-pin): the processes share the CPUs")
    # On two cores an unpinned server and wrk steal each other's CPU mid-run, which
    # shows up as noise in p99; pinning gives each a core of its own.
    cpus = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if taskset is None or len(cpus) < 2:
        reason = "taskset not found" if taskset is None else f"only {len(cpus)} CPU"
        return Pinning([], [], f"not pinned ({reason}): server and wrk share the CPUs")
    server, load = str(cpus[0]), str(cpus[1])
    return Pinning([taskset, "-c", server], [taskset, "-c", load],
                   f"server pinned to CPU {server}, wrk to CPU {load} (taskset)")


def code_version() -> str:
    """The commit under test, and whether the working tree differs from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "code version unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)missive")
    return f"missive at {commit}" + (" + uncommitted changes" if dirty else "")


# --- servers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_server(name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path) -> Server:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, process, port, log_path)
    wait_listening(server)
    return server


def wait_listening(server: Server, timeout: float = 60.0) -> None:
    # uvicorn runs the lifespan (migrations, group writer) before it binds, so a
    # connectable port means the application is ready.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchFailure(f"{server.name} exited at start:\n{server.log_tail()}")
        try:
            with socket.create_connection((HOST, server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    stop_server(server)
    raise BenchFailure(f"{server.name} did not listen within {timeout:.0f} s:\n{server.log_tail()}")


def stop_server(server: Server) -> int:
    """SIGTERM (a graceful uvicorn shutdown) and the exit code; kill after 30 s."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


def stop_checked(server: Server) -> None:
    code = stop_server(server)
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is over.
    if code not in (0, -signal.SIGTERM):
        raise BenchFailure(f"{server.name} exited with code {code} on SIGTERM:\n{server.log_tail()}")
    log = server.log_path.read_text(errors="replace")
    if "Traceback" in log or "\nERROR" in log:
        raise BenchFailure(f"{server.name} logged errors:\n{server.log_tail()}")


# --- CPU accounting -----------------------------------------------------------------
# Where the two cores went during a run: a server that does not use its whole core is
# waiting on something, and a busy neighbour (another job on this machine) makes the
# figures noise.


@dataclass(frozen=True)
class Cpu:
    """CPU seconds: cumulative counters, or the difference of two snapshots."""

    server_main: float  # the server's main (event-loop) thread
    server_other: float  # its other threads: aiosqlite's workers for missive
    load: float  # reaped children: wrk, and py-spy when profiling
    machine: float  # busy time of every CPU of the machine
    wall: float

    def since(self, before: Cpu) -> Cpu:
        return Cpu(*(now - then for now, then in zip(astuple(self), astuple(before), strict=False)))

    @property
    def others(self) -> float:
        """What neither the server nor the load generator used."""
        return max(0.0, self.machine - self.server_main - self.server_other - self.load)


def cpu_snapshot(pid: int) -> Cpu:
    main, other = _thread_cpu(pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Cpu(main, other, children.ru_utime + children.ru_stime, _machine_busy(), time.monotonic())


def _thread_cpu(pid: int) -> tuple[float, float]:
    # The process totals include threads that have ended (aiosqlite's worker thread
    # goes with its connection when the pool discards one); the task's are its own.
    total = _stat_cpu(Path(f"/proc/{pid}/stat"))
    main = _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))
    return main, total - main


def _stat_cpu(stat: Path) -> float:
    # comm (field 2) may hold spaces; utime and stime are fields 14 and 15.
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_busy() -> float:
    # First line of /proc/stat: "cpu user nice system idle iowait irq softirq steal ...".
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


# --- missive provisioning ------------------------------------------------------------


def missive_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    # An inherited MISSIVE_DATABASE_URL would point the run at another database.
    # The benchmarks' webhook sink listens on 127.0.0.1: allow private URLs.
    env = {**os.environ, "MISSIVE_DATA_DIR": str(data_dir), "MISSIVE_DATABASE_URL": "", "MISSIVE_ALLOW_PRIVATE_URLS": "true"}
    return {**env, **(extra or {})}


def missive_json(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-m", "missive", *args, "--json"],
                          env=missive_env(data_dir, env), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchFailure(f"`missive {' '.join(args)}` failed: {done.stderr.strip()}")
    return dict(json.loads(done.stdout))


def provision(data_dir: Path, status_url: str | None = None,
              env: dict[str, str] | None = None) -> tuple[str, str]:
    """A new account and application; returns (application id, private key PEM).

    `env` is extra environment for the CLI, e.g. MISSIVE_DATABASE_URL."""
    account = missive_json(data_dir, "account", "create", env=env)
    webhooks = ["--status-url", status_url] if status_url else []
    app = missive_json(data_dir, "app", "create", "--name", "bench", "--api-key", account["api_key"],
                       *webhooks, env=env)
    return app["id"], app["private_key"]


def make_token(application_id: str, private_key: str) -> str:
    iat = int(time.time())
    claims = {"application_id": application_id, "iat": iat, "jti": str(uuid.uuid4()), "exp": iat + 3600}
    return jwt.encode(claims, private_key, algorithm="RS256")


def count_messages(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


# --- load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    connections: int
    threads: int
    seconds: int  # the send window; wrk runs `grace` seconds longer to drain
    grace: int


@dataclass(frozen=True)
class Result:
    accepted: int  # 202s
    others: dict[str, int]  # every other status -> count
    in_flight: int  # requests still unanswered when wrk stopped
    p50_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: dict[str, int]
    seconds: int
    cpu: Cpu | None = None  # over the whole wrk run (send window and grace)

    @property
    def rate(self) -> float:
        # Closed loop: what was answered after the window was sent within it; the
        # overcount is at most one request per connection.
        return self.accepted / self.seconds

    @property
    def non_202(self) -> int:
        return sum(self.others.values())


def run_wrk(wrk: str, pin: Pinning, url: str, token: str, load: Load,
            during: Callable[[], None] | None = None) -> Result:
    body = json.dumps(SMS, separators=(",", ":"))
    command = [
        *pin.load, wrk, "--threads", str(load.threads), "--connections", str(load.connections),
        "--duration", f"{load.seconds + load.grace}s",
        # wrk drops answers slower than --timeout from its latency histogram.
        "--timeout", f"{load.seconds + load.grace}s",
        "--script", str(LUA_SCRIPT), url, "--", str(load.seconds), body, f"Bearer {token}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if during is not None:
        during()
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise BenchFailure(f"wrk failed ({process.returncode}): {stderr.strip()}")
    return parse_wrk(stdout, load)


def parse_wrk(stdout: str, load: Load) -> Result:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH-RESULT ")), None)
    if line is None:
        raise BenchFailure(f"wrk printed no BENCH-RESULT line:\n{stdout}")
    raw = json.loads(line.removeprefix("BENCH-RESULT "))
    return Result(
        accepted=raw["accepted"],
        others=raw["others"],
        in_flight=load.connections - raw["parked"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        socket_errors={k: v for k, v in raw["socket_errors"].items() if v},
        seconds=load.seconds,
    )


# --- the two runs --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wrk: str
    pin: Pinning
    load: Load
    workdir: Path
    profile_seconds: int
    server_env: dict[str, str]  # extra environment for `missive serve`


def drive(server: Server, run: Run, token: str, during: Callable[[], None] | None = None) -> Result:
    """Run wrk against a started server; the server is stopped whatever happens."""
    try:
        before = cpu_snapshot(server.process.pid)
        result = run_wrk(run.wrk, run.pin, server.url, token, run.load, during)
        if server.process.poll() is not None:
            raise BenchFailure(f"{server.name} died during the run (exit code "
                               f"{server.process.returncode}):\n{server.log_tail()}")
        cpu = cpu_snapshot(server.process.pid).since(before)
    finally:
        stop_server(server)
    stop_checked(server)
    return replace(result, cpu=cpu)


@dataclass
class Profile:
    text: str = ""


def profiler(server: Server, run: Run, profile: Profile) -> Callable[[], None] | None:
    """What to do while wrk runs: sample the server mid-window with py-spy."""
    if run.profile_seconds <= 0:
        return None
    seconds = min(run.profile_seconds, max(1, run.load.seconds - 2))
    raw = run.workdir / "missive.pyspy.txt"

    def sample() -> None:
        time.sleep(1)  # past connection setup and the first (uncached) JWT check
        try:
            pyspy_summary.record(server.process.pid, seconds, raw, run.pin.load)
            profile.text = pyspy_summary.summarize(raw)
        except RuntimeError as exc:
            profile.text = f"profile skipped: {exc}"

    return sample


@dataclass(frozen=True)
class MissiveRun:
    result: Result
    rows: int  # in the messages table after the server stopped
    token: str
    profile: str


def bench_missive(run: Run) -> MissiveRun:
    data_dir = run.workdir / "missive-data"
    app_id, private_key = provision(data_dir)
    token = make_token(app_id, private_key)
    port = free_port()
    argv = [*run.pin.server, sys.executable, "-m", "missive", "serve", "--host", HOST, "--port", str(port)]
    server = start_server("missive", argv, missive_env(data_dir, run.server_env), port, run.workdir)
    profile = Profile()
    result = drive(server, run, token, profiler(server, run, profile))
    # Counted after a clean shutdown: every commit the server acknowledged is final.
    return MissiveRun(result, count_messages(data_dir / "missive.db"), token, profile.text)


def bench_bare(run: Run, token: str) -> Result:
    port = free_port()
    argv = [*run.pin.server, sys.executable, str(BENCH_DIR / "bare_app.py"), "--host", HOST, "--port", str(port)]
    server = start_server("bare", argv, dict(os.environ), port, run.workdir)
    return drive(server, run, token)


# --- report --------------------------------------------------------------------------


def durability(rows: int, result: Result) -> tuple[bool, str]:
    """One row per 202: fewer rows lose acknowledged messages, more invent some."""
    if rows == result.accepted:
        return True, f"{rows:,} rows in messages == {result.accepted:,} 202s received: OK"
    # A request abandoned in flight may have been committed without its 202 being read.
    lost = result.accepted - rows
    detail = (f"{lost:,} acknowledged messages missing" if lost > 0
              else f"{-lost:,} more rows than 202s")
    if 0 <= -lost <= result.in_flight:
        detail += f" (wrk left {result.in_flight} requests unanswered; raise --grace)"
    return False, f"{rows:,} rows in messages != {result.accepted:,} 202s received: {detail}"


def result_line(name: str, result: Result) -> str:
    return (f"{name:<8} {result.rate:>12,.0f} {result.non_202:>9,} {result.p50_ms:>8.2f} "
            f"{result.p99_ms:>8.2f} {result.max_ms:>8.2f}")


def notes(name: str, result: Result) -> list[str]:
    out = []
    if result.others:
        out.append(f"{name}: non-202 answers by status: {result.others}")
    if result.socket_errors:
        out.append(f"{name}: wrk socket errors: {result.socket_errors}")
    if result.in_flight:
        out.append(f"{name}: {result.in_flight} requests still unanswered after the grace period")
    if result.cpu is not None:
        out += cpu_notes(name, result)
    return out


def cpu_notes(name: str, result: Result) -> list[str]:
    # Server and wrk are idle during the grace period, so their share is per second of
    # the send window; other processes may run throughout, so theirs is per wall second.
    cpu = result.cpu
    assert cpu is not None
    server = cpu.server_main + cpu.server_other
    per_request = f"{1e6 * server / result.accepted:.0f} us" if result.accepted else "-"
    line = (f"{name}: CPU per second: server {cpu.server_main / result.seconds:.0%} event loop + "
            f"{cpu.server_other / result.seconds:.0%} other threads ({per_request} per 202), "
            f"load generator {cpu.load / result.seconds:.0%}, "
            f"other processes {cpu.others / cpu.wall:.0%}")
    out = [line]
    if cpu.others / cpu.wall > NOISY_NEIGHBOURS:
        out.append(f"{name}: WARNING: other processes used {cpu.others / cpu.wall:.2f} cores "
                   "during this run; its figures are not reliable")
    return out


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISS"


def report(run: MissiveRun, bare: Result) -> bool:
    """Print the figures; returns whether the durability check held."""
    missive = run.result
    ratio = missive.rate / bare.rate if bare.rate else 0.0
    durable, durable_text = durability(run.rows, missive)
    print(f"\n{'':<8} {'accepted/s':>12} {'non-202':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(result_line("missive", missive))
    print(result_line("bare", bare))
    for line in notes("missive", missive) + notes("bare", bare):
        print(line)
    print(f"ratio missive/bare: {ratio:.2f}")
    print(f"durability: {durable_text}")
    print(f"targets: {TARGET_RPS:,} accepted/s {verdict(missive.rate >= TARGET_RPS)}, "
          f"p99 <= {TARGET_P99_MS:g} ms {verdict(missive.p99_ms <= TARGET_P99_MS)}, "
          f"ratio >= {TARGET_RATIO} {verdict(ratio >= TARGET_RATIO)}")
    if run.profile:
        print(f"\nmissive under load, {run.profile}")
    return durable


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of load per server (20)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    parser.add_argument("--threads", type=int, default=0,
                        help="wrk threads (default: 1 when pinned to one core, else 2)")
    parser.add_argument("--grace", type=int, default=3,
                        help="seconds wrk waits for the last answers after sending stops (3)")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="sample the missive server with py-spy for this long under load")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place server and wrk (default: a core each)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for `missive serve`, e.g. MISSIVE_DISPATCH_IN_SERVE=false")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.connections < 1 or args.grace < 1:
        parser.error("--duration, --connections and --grace must be at least 1")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    args.server_env = dict(item.split("=", 1) for item in args.server_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    pin = plan_pinning(not args.no_pin)
    threads = args.threads or (1 if pin.load else 2)
    load = Load(args.connections, min(threads, args.connections), args.duration, args.grace)
    print(f"POST {PATH}: {load.connections} connections, {load.seconds} s per server, "
          f"wrk {load.threads} thread(s); {pin.note}", flush=True)
    print(code_version())
    if args.server_env:
        print(f"missive serve environment: {args.server_env}")
    with tempfile.TemporaryDirectory(prefix="missive-bench-") as tmp:
        run = Run(wrk, pin, load, Path(tmp), args.profile, args.server_env)
        try:
            print("missive ...", flush=True)
            missive = bench_missive(run)
            print("bare ...", flush=True)
            bare = bench_bare(run, missive.token)
        except BenchFailure as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        return 0 if report(missive, bare) else 1


if __name__ == "__main__":
    sys.exit(main())
