"""Dispatch benchmark: API -> dispatcher -> sandbox -> status webhooks, end to end.

For each phase: a fresh data directory (SQLite), `missive serve` with the sandbox
answering `delivered` at once (MISSIVE_SANDBOX_DELIVERED_AFTER=0), and an application
whose status URL is bench/webhook_sink.py, a bare uvicorn app in its own process that
notes when each (message_uuid, status) webhook arrives. The load generator is an asyncio
HTTP/1.1 client on uvloop in this process, over keep-alive connections, posting the same
JWT-authenticated SMS.

  1. flat out: --messages SMS as fast as the server takes them; prints accepted/s and
     delivered webhooks/s end to end (first request sent to last `delivered` webhook).
  2. paced: --rate messages/s offered open loop for --seconds; prints the p50/p99 time
     from each 202 to its `delivered` webhook (and of the 202 itself, from the moment the
     request was due, so a server that falls behind cannot hide it).

Afterwards every message must be `delivered` in the database. When webhooks stop coming
for --stall seconds the phase ends and what is missing is reported.

Exit status: 0 when the phases ran and every message was delivered with its webhook; 1
when a server failed or something was missing. Missing a target is reported, not an
error. --profile needs py-spy (pip install py-spy).

    .venv/bin/python bench/dispatch.py [--messages 20000] [--rate 1000] [--seconds 10]
                                       [--connections 64] [--profile 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyspy_summary  # bench/, on sys.path as this script's directory
import uvloop
from accept import (  # the accept bench's servers, provisioning and CPU pinning
    CLOCK_TICKS,
    HOST,
    SMS,
    BenchFailure,
    Pinning,
    Server,
    free_port,
    make_token,
    missive_env,
    plan_pinning,
    provision,
    start_server,
    stop_checked,
    stop_server,
)

BENCH_DIR = Path(__file__).resolve().parent
PATH = "/v1/messages"

TARGET_END_TO_END = 3_000  # messages/s, flat out
TARGET_P99_S = 1.0  # 202 -> delivered webhook, at TARGET_RATE offered
TARGET_RATE = 1_000

SERVER_ENV = {"MISSIVE_SANDBOX_DELIVERED_AFTER": "0"}


# --- the load generator --------------------------------------------------------------


@dataclass
class Sent:
    """What the load generator saw: per 202, the message_uuid and when the request was due,
    written and answered (time.time())."""

    started: float  # when the first request was due
    accepted: list[tuple[str, float, float, float]] = field(default_factory=list)
    others: Counter[str] = field(default_factory=Counter)  # non-202 answers and errors

    @property
    def last_answer(self) -> float:
        return max((answered for *_, answered in self.accepted), default=self.started)


def request_bytes(token: str, port: int) -> bytes:
    body = json.dumps(SMS, separators=(",", ":")).encode()
    head = (f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def generate(port: int | Sequence[int], request: bytes, count: int, rate: float | None,
                   connections: int) -> Sent:
    """Send `count` requests: all at once (rate None) or `rate` per second, open loop.

    A request is due at its slot in the schedule; when every connection is busy it waits
    in the queue, and that wait counts in its latency. Given several ports (servers of
    one database), the connections are spread over them in turn.
    """
    ports = [port] if isinstance(port, int) else list(port)
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    sent = Sent(started=time.time())

    async def pace() -> None:
        if rate is None:
            for _ in range(count):
                queue.put_nowait(sent.started)
        else:
            queued = 0
            while queued < count:
                due = min(count, int((time.time() - sent.started) * rate) + 1)
                for i in range(queued, due):
                    queue.put_nowait(sent.started + i / rate)
                queued = due
                await asyncio.sleep(0.001)
        for _ in range(connections):
            queue.put_nowait(None)

    async def connection(port: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while (due := await queue.get()) is not None:
                written = time.time()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(_content_length(head))
                answered = time.time()
                status = head[9:12].decode()
                if status == "202":
                    uuid = orjson.loads(body)["message_uuid"]
                    sent.accepted.append((uuid, due, written, answered))
                else:
                    sent.others[status] += 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            sent.others[type(exc).__name__] += 1
        finally:
            writer.close()

    await asyncio.gather(pace(), *(connection(ports[i % len(ports)]) for i in range(connections)))
    return sent


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def run_load(port: int | Sequence[int], request: bytes, count: int, rate: float | None,
             connections: int) -> Sent:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(generate(port, request, count, rate, connections))


# --- the webhook sink ----------------------------------------------------------------


def start_sink(name: str, workdir: Path, prefix: Sequence[str] = ()) -> Server:
    """bench/webhook_sink.py on a free port; `prefix` is a command prefix (taskset)."""
    port = free_port()
    return start_server(name, [*prefix, sys.executable, str(BENCH_DIR / "webhook_sink.py"),
                               "--port", str(port)], dict(os.environ), port, workdir)


def sink_get(sink: Server, path: str) -> object:
    with urllib.request.urlopen(f"http://{HOST}:{sink.port}{path}", timeout=30) as answer:
        return orjson.loads(answer.read())


def wait_delivered(sink: Server, expected: int, stall: float,
                   progress: Callable[[str], None]) -> None:
    """Until `expected` delivered webhooks arrived, or none came for `stall` seconds."""
    seen, last_change, last_print = -1, time.monotonic(), 0.0
    while True:
        stats = sink_get(sink, "/stats")
        assert isinstance(stats, dict)
        delivered = stats["statuses"].get("delivered", 0)
        now = time.monotonic()
        if delivered >= expected:
            return
        if stats["total"] != seen:
            seen, last_change = stats["total"], now
        elif now - last_change > stall:
            progress(f"no webhook for {stall:.0f} s: giving up with {delivered:,} of "
                     f"{expected:,} delivered webhooks")
            return
        if now - last_print >= 5:
            progress(f"{delivered:,} of {expected:,} delivered webhooks so far")
            last_print = now
        time.sleep(0.1)


# --- CPU -----------------------------------------------------------------------------


def proc_cpu(pid: int) -> tuple[float, float]:
    """(main thread, other threads) CPU seconds of a process."""
    def stat(path: str) -> float:
        fields = Path(path).read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    total, main = stat(f"/proc/{pid}/stat"), stat(f"/proc/{pid}/task/{pid}/stat")
    return main, total - main


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuUse:
    """Cores used on average over a phase, from first request to last webhook."""

    server_main: float
    server_other: float
    sink: float
    load: float


def cpu_meter(server: Server, sink: Server) -> Callable[[], CpuUse]:
    start = (time.monotonic(), proc_cpu(server.process.pid), sum(proc_cpu(sink.process.pid)),
             own_cpu())

    def stop() -> CpuUse:
        wall = time.monotonic() - start[0]
        main, other = proc_cpu(server.process.pid)
        return CpuUse((main - start[1][0]) / wall, (other - start[1][1]) / wall,
                      (sum(proc_cpu(sink.process.pid)) - start[2]) / wall,
                      (own_cpu() - start[3]) / wall)

    return stop


# --- one phase -----------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    pin: Pinning
    workdir: Path
    connections: int
    stall: float
    profile_seconds: int
    server_env: dict[str, str]


@dataclass(frozen=True)
class Phase:
    name: str
    count: int
    rate: float | None  # None: flat out


@dataclass
class Outcome:
    phase: Phase
    sent: Sent
    webhooks: list[tuple[str, str, float]]  # (message_uuid, status, arrived_at)
    statuses: dict[str, int]  # messages by status in the database afterwards
    cpu: CpuUse
    profile: str = ""


def run_phase(phase: Phase, options: Options, progress: Callable[[str], None]) -> Outcome:
    workdir = options.workdir / phase.name
    workdir.mkdir(parents=True)
    sink = start_sink(f"sink-{phase.name}", workdir, options.pin.load)
    try:
        data_dir = workdir / "data"
        token = make_token(*provision(data_dir, f"http://{HOST}:{sink.port}/status"))
        port = free_port()
        argv = [*options.pin.server, sys.executable, "-m", "missive", "serve", "--host", HOST,
                "--port", str(port)]
        env = missive_env(data_dir, {**SERVER_ENV, **options.server_env})
        server = start_server(f"missive-{phase.name}", argv, env, port, workdir)
        try:
            meter = cpu_meter(server, sink)
            profiler = start_profiler(server, options, workdir)
            sent = run_load(port, request_bytes(token, port), phase.count, phase.rate,
                            options.connections)
            progress(f"{len(sent.accepted):,} accepted in {sent.last_answer - sent.started:.1f} s;"
                     " waiting for the webhooks")
            wait_delivered(sink, len(sent.accepted), options.stall, progress)
            cpu = meter()
            profile = profiler() if profiler else ""
            if server.process.poll() is not None:
                raise BenchFailure(f"missive died during the run:\n{server.log_tail()}")
            webhooks = [tuple(w) for w in sink_get(sink, "/records")]  # type: ignore[union-attr]
        finally:
            stop_server(server)
        stop_checked(server)
    finally:
        stop_server(sink)
    return Outcome(phase, sent, webhooks, message_statuses(data_dir / "missive.db"), cpu, profile)


def start_profiler(server: Server, options: Options, workdir: Path) -> Callable[[], str] | None:
    """Sample the server with py-spy, from 2 s into the load; call the result to read it."""
    if options.profile_seconds <= 0:
        return None
    raw = workdir / "missive.pyspy.txt"
    result = [""]

    def sample() -> None:
        time.sleep(2)
        try:
            pyspy_summary.record(server.process.pid, options.profile_seconds, raw,
                                 options.pin.load)
            result[0] = pyspy_summary.summarize(raw) + f"\n  (raw samples: {raw})"
        except RuntimeError as exc:
            result[0] = f"profile skipped: {exc}"

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()

    def read() -> str:
        thread.join()
        return result[0]

    return read


def message_statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status"))


# --- report --------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile; inf when the rank falls on a missing value."""
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(share * len(ordered) + 0.5) - 1))]


@dataclass(frozen=True)
class Figures:
    accepted: int
    accepted_rate: float
    end_to_end_rate: float  # delivered webhooks/s, first request to last delivered webhook
    webhook_rate: float  # webhooks of every status/s, same window
    to_delivered: list[float]  # per accepted message: 202 -> delivered webhook; inf if none
    answer_latency: list[float]  # per 202: due (paced) or written (flat out) -> answered
    missing: int  # accepted messages without a delivered webhook
    repeated: int  # (message_uuid, status) webhooks that arrived more than once


def figures(outcome: Outcome) -> Figures:
    sent = outcome.sent
    delivered: dict[str, float] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    for uuid, status, arrived in outcome.webhooks:
        pairs[(uuid, status)] += 1
        if status == "delivered":
            delivered[uuid] = min(arrived, delivered.get(uuid, arrived))
    to_delivered = [delivered.get(uuid, float("inf")) - answered
                    for uuid, *_, answered in sent.accepted]
    last = max(delivered.values(), default=sent.started)
    last_any = max((arrived for _, _, arrived in outcome.webhooks), default=sent.started)
    accepted = len(sent.accepted)
    return Figures(
        accepted=accepted,
        accepted_rate=accepted / max(1e-9, sent.last_answer - sent.started),
        end_to_end_rate=len(delivered) / max(1e-9, last - sent.started),
        webhook_rate=len(outcome.webhooks) / max(1e-9, last_any - sent.started),
        to_delivered=to_delivered,
        answer_latency=[answered - (written if outcome.phase.rate is None else due)
                        for _, due, written, answered in sent.accepted],
        missing=sum(1 for t in to_delivered if t == float("inf")),
        repeated=sum(1 for n in pairs.values() if n > 1),
    )


def seconds(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.3f} s"


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISS"


def report(outcome: Outcome) -> bool:
    """Print a phase's figures; whether every message was delivered with its webhook."""
    phase, f = outcome.phase, figures(outcome)
    offered = "flat out" if phase.rate is None else f"{phase.rate:,.0f}/s offered"
    print(f"\n{phase.name}: {phase.count:,} messages, {offered}, "
          f"{len(outcome.webhooks):,} webhooks received")
    print(f"  accepted/s                {f.accepted_rate:>10,.0f}  ({f.accepted:,} 202s)")
    print(f"  delivered webhooks/s      {f.end_to_end_rate:>10,.0f}  (first request to last "
          f"`delivered` webhook)")
    print(f"  webhooks/s, all statuses  {f.webhook_rate:>10,.0f}")
    print(f"  202 -> delivered webhook  p50 {seconds(percentile(f.to_delivered, 0.5))}, "
          f"p99 {seconds(percentile(f.to_delivered, 0.99))}, "
          f"max {seconds(max(f.to_delivered, default=float('inf')))}")
    since = "written" if phase.rate is None else "due"
    print(f"  202 itself (from {since + ')':<8} p50 {seconds(percentile(f.answer_latency, 0.5))}, "
          f"p99 {seconds(percentile(f.answer_latency, 0.99))}")
    cpu = outcome.cpu
    print(f"  cores used: server {cpu.server_main:.2f} event loop + {cpu.server_other:.2f} other "
          f"threads, sink {cpu.sink:.2f}, load generator {cpu.load:.2f}")
    ok = True
    if outcome.sent.others:
        print(f"  not accepted: {dict(outcome.sent.others)}")
        ok = False
    if f.missing:
        print(f"  MISSING: {f.missing:,} accepted messages without a `delivered` webhook")
        ok = False
    if f.repeated:
        print(f"  {f.repeated:,} webhooks arrived more than once")
    if outcome.statuses != {"delivered": f.accepted}:
        print(f"  messages by status in the database: {outcome.statuses}")
        ok = False
    if phase.rate is None:
        print(f"  target: >= {TARGET_END_TO_END:,} messages/s end to end "
              f"{verdict(f.end_to_end_rate >= TARGET_END_TO_END)}")
    else:
        p99 = percentile(f.to_delivered, 0.99)
        print(f"  target: p99 202 -> delivered <= {TARGET_P99_S:g} s at {TARGET_RATE:,}/s offered "
              f"{verdict(p99 <= TARGET_P99_S and phase.rate >= TARGET_RATE)}")
    if outcome.profile:
        print(f"\n{phase.name}, missive under load, {outcome.profile}")
    return ok


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000,
                        help="messages sent flat out in phase 1 (20000)")
    parser.add_argument("--rate", type=float, default=TARGET_RATE,
                        help=f"messages/s offered in phase 2 ({TARGET_RATE})")
    parser.add_argument("--seconds", type=float, default=10, help="length of phase 2 (10)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    parser.add_argument("--stall", type=float, default=30,
                        help="end a phase when no webhook came for this long (30)")
    parser.add_argument("--phase", choices=("1", "2", "both"), default="both")
    parser.add_argument("--no-pin", action="store_true",
                        help="let server, sink and load generator share both CPUs")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="sample the server with py-spy for this long in each phase")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (logs, databases, py-spy samples)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for `missive serve`, e.g. MISSIVE_POLL_INTERVAL=0.05")
    args = parser.parse_args(argv)
    if min(args.messages, args.connections) < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--messages, --connections, --rate and --seconds must be positive")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    args.server_env = dict(item.split("=", 1) for item in args.server_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin = plan_pinning(not args.no_pin)
    if pin.load:
        # The load generator is this process: onto the load generator's CPU.
        os.sched_setaffinity(0, {int(pin.load[-1])})
    phases = []
    if args.phase in ("1", "both"):
        phases.append(Phase("flat-out", args.messages, None))
    if args.phase in ("2", "both"):
        phases.append(Phase("paced", round(args.rate * args.seconds), args.rate))
    print(f"POST {PATH} -> sandbox (delivered at once) -> status webhooks; "
          f"{args.connections} connections; {pin.note.replace('wrk', 'sink and load generator')}",
          flush=True)
    if args.server_env:
        print(f"missive serve environment: {args.server_env}")
    workdir = Path(tempfile.mkdtemp(prefix="missive-dispatch-bench-"))
    options = Options(pin, workdir, args.connections, args.stall, args.profile, args.server_env)
    ok = True
    try:
        for phase in phases:
            print(f"{phase.name} ...", flush=True)
            try:
                outcome = run_phase(phase, options,
                                    lambda line: print(f"  {line}", flush=True))
            except BenchFailure as exc:
                print(f"FAILED: {exc}", file=sys.stderr)
                return 1
            ok = report(outcome) and ok
    finally:
        if args.keep:
            print(f"\nworking directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
