"""Scaling benchmark on PostgreSQL: accept and end to end with 1, 2 and 4 processes.

Starts a throwaway PostgreSQL cluster (tests/postgres.py) or uses --postgres-url, and for
each N in --processes, every run on a fresh database:

  accept      N `missive serve` with MISSIVE_DISPATCH_IN_SERVE=false, each on its own
              port, driven by N wrk (the accept.lua of bench/accept.py) over --connections
              keep-alive connections in all for --accept-seconds; accepted/s counts 202s,
              p50/p99 are the highest of the N wrk runs' (at or above the combined ones).
              Afterwards the messages table must hold one row per 202. With --workers, one
              `missive serve --workers N` on one port and one wrk instead.
  end to end  N `missive serve` (API only) plus N `missive dispatch` ("separate"), or N
              `missive serve` dispatching themselves ("in-serve"); the sandbox answers
              `delivered` at once and the status webhooks go to bench/webhook_sink.py. The
              load generator of bench/dispatch.py spreads its connections over the N
              ports: --messages flat out (delivered/s = first request to last `delivered`
              webhook), then --rate messages/s for --seconds (p50/p99 from each 202 to its
              `delivered` webhook). Every message must end `delivered`, with its webhook.

Nothing is pinned: servers, dispatchers, PostgreSQL, wrk, the sink and the load generator
share the machine's CPUs, and each run says where the cores went (on stderr, with the
progress). The Missive logs are searched for records at WARNING or above and tracebacks
(failed claims, commits and timer runs are warnings: deadlocks and serialization
failures show there), PostgreSQL's log (when it runs on this machine and was started by
tests/postgres.py) for ERROR, FATAL and PANIC lines; the table and what was found go to
stdout.

Exit status: 0 when every run completed with every message accounted for and nothing
logged; 1 otherwise; 2 when wrk (or `serve --workers`) is missing. Missing a target is
reported, not an error.

    .venv/bin/python bench/scaling.py [--processes 1,2,4] [--accept-seconds 10]
        [--messages 20000] [--rate 1000 --seconds 10] [--e2e separate,in-serve]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--workers]
        [--json FILE] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import sqlalchemy  # noqa: E402
from accept import (  # noqa: E402 - bench/ modules, next to this script
    HOST,
    NOISY_NEIGHBOURS,
    BenchFailure,
    Load,
    Pinning,
    Result,
    Server,
    _machine_busy,
    code_version,
    durability,
    ensure_wrk,
    free_port,
    make_token,
    missive_env,
    provision,
    run_wrk,
    start_server,
    stop_server,
)
from dispatch import (  # noqa: E402
    SERVER_ENV,
    CpuUse,
    Outcome,
    Phase,
    figures,
    own_cpu,
    percentile,
    proc_cpu,
    request_bytes,
    run_load,
    sink_get,
    start_sink,
    wait_delivered,
)

from tests.postgres import cluster  # noqa: E402

TARGET_ACCEPTED = 4_000  # messages/s accepted, on PostgreSQL
TARGET_END_TO_END = 2_500  # messages/s API -> sandbox -> delivered webhook, on PostgreSQL

NOT_PINNED = Pinning([], [], "not pinned")
# What counts as a problem in a Missive log: a record at WARNING or above (Missive logs
# failed claims, commits and timer runs, where a deadlock would show, as warnings), a
# traceback. Logs are JSON lines by default, else "time LEVEL logger message".
LOG_LEVELS = ("WARNING", "ERROR", "CRITICAL")
LOG_TEXT = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|deadlock|serializ")
DISPATCHER_RUNNING = re.compile(r"dispatcher\b.*\brunning")
PG_ERROR = re.compile(r"\b(ERROR|FATAL|PANIC):|deadlock")


def progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


# --- PostgreSQL ----------------------------------------------------------------------


def _sync_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


@dataclass
class Postgres:
    """A PostgreSQL server on which this script may create databases."""

    url: str  # postgresql://user@host:port/db, a superuser's (CREATE DATABASE, data_directory)
    created: list[str] = field(default_factory=list)
    data_dir: Path | None = None  # when the server runs on this machine and we may read it

    def __post_init__(self) -> None:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            path = Path(self.admin("SHOW data_directory")[0][0])
            if (path / "postmaster.pid").exists():
                self.data_dir = path

    def admin(self, sql: str) -> list[tuple]:
        engine = sqlalchemy.create_engine(_sync_url(self.url), isolation_level="AUTOCOMMIT",
                                          poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                result = conn.execute(sqlalchemy.text(sql))
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def create(self, label: str) -> str:
        """A fresh database; its URL for MISSIVE_DATABASE_URL."""
        name = f"scaling_{label}_{uuid.uuid4().hex[:8]}".replace("-", "_")
        self.admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def drop_created(self) -> None:
        for name in self.created:
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()

    @staticmethod
    def statuses(database_url: str) -> dict[str, int]:
        """Messages by status in one of the databases."""
        engine = sqlalchemy.create_engine(_sync_url(database_url), poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                sql = "SELECT status, COUNT(*) FROM messages GROUP BY status"
                return {status: int(n) for status, n in conn.execute(sqlalchemy.text(sql))}
        finally:
            engine.dispose()

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, walwriter, ...), when local."""
        if self.data_dir is None:
            return []
        try:
            postmaster = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return []
        return family(postmaster)

    @property
    def log(self) -> Path | None:
        # tests/postgres.py logs to server.log next to the data directory.
        path = self.data_dir.parent / "server.log" if self.data_dir else None
        return path if path is not None and path.exists() else None

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log else 0

    def log_errors(self, since: int) -> list[str]:
        if self.log is None:
            return []
        with self.log.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [line for line in text.splitlines() if PG_ERROR.search(line)]


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[Postgres]:
    if url:
        server = Postgres(url)
        try:
            yield server
        finally:
            server.drop_created()
        return
    with cluster() as started:  # thrown away with every database in it
        yield Postgres(started)


# --- processes -----------------------------------------------------------------------


def family(pid: int) -> list[int]:
    """A process and its direct children."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return [pid, *children]


def start_serve(name: str, env: dict[str, str], workdir: Path, workers: int = 0) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "missive", "serve", "--host", HOST, "--port", str(port)]
    if workers:
        argv += ["--workers", str(workers)]
    return start_server(name, argv, env, port, workdir)


def start_dispatcher(name: str, env: dict[str, str], workdir: Path, timeout: float = 60) -> Server:
    """`missive dispatch`, once it logged that it runs (it listens on no port)."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "missive", "dispatch"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, process, 0, log_path)
    deadline = time.monotonic() + timeout
    while not DISPATCHER_RUNNING.search(log_path.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise BenchFailure(f"{name} did not start:\n{server.log_tail()}")
        time.sleep(0.1)
    return server


def stop_all(servers: list[Server]) -> list[str]:
    """SIGTERM to every server at once; what went wrong: exit codes, errors in the logs."""
    for server in servers:
        if server.process.poll() is None:
            server.process.terminate()
    problems = []
    for server in servers:
        code = stop_server(server)
        if code not in (0, -15):  # uvicorn re-raises the SIGTERM it handled
            problems.append(f"{server.name} exited with code {code}:\n{server.log_tail()}")
        problems += log_errors(server)
    return problems


def is_problem(line: str) -> bool:
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                return record.get("level") in LOG_LEVELS or "exc" in record
    # uvicorn's logger is called uvicorn.error whatever it says.
    return bool(LOG_TEXT.search(line.replace("uvicorn.error", "uvicorn")))


def log_errors(server: Server, context: int = 12, most: int = 3) -> list[str]:
    """Excerpts of a log around its first few problem lines, and how many there were."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    hits = [i for i, line in enumerate(lines) if is_problem(line)]
    excerpts, shown_to = [], -1
    for i in hits:
        if i <= shown_to:
            continue
        if len(excerpts) == most:
            break
        shown_to = i + context
        excerpts.append("\n".join(lines[i:shown_to + 1]))
    if not excerpts:
        return []
    return [f"{server.name} ({server.log_path}): {len(hits)} warning/error lines; first:\n"
            + "\n  ...\n".join(excerpts)]


# --- CPU -----------------------------------------------------------------------------


def _cpu(pids: list[int]) -> dict[int, float]:
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # a backend that just ended
            used[pid] = sum(proc_cpu(pid))
    return used


def cpu_meter(groups: dict[str, Callable[[], list[int]]]) -> Callable[[float | None], dict[str, float]]:
    """Cores used per group of processes until the result is called, plus `load` (this
    process and reaped children: the load generator and wrk) and `others` (the rest of
    the machine: other jobs, and PostgreSQL when it is not local). Called with `busy`
    seconds, the groups' and load's CPU is divided by those instead of the wall time (wrk
    sends for part of its run only); `others` always by the wall time."""
    def snapshot() -> tuple[float, dict[str, dict[int, float]], float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (time.monotonic(), {name: _cpu(pids()) for name, pids in groups.items()},
                own_cpu() + children.ru_utime + children.ru_stime, _machine_busy())

    start = snapshot()

    def stop(busy: float | None = None) -> dict[str, float]:
        end = snapshot()
        wall = end[0] - start[0]
        # Processes that started during the run (new backends) count from zero.
        used = {name: sum(now - start[1][name].get(pid, 0.0) for pid, now in end[1][name].items())
                for name in groups}
        used["load"] = end[2] - start[2]
        others = max(0.0, end[3] - start[3] - sum(used.values())) / wall
        return {**{name: value / (busy or wall) for name, value in used.items()}, "others": others}

    return stop


def pids_of(servers: list[Server]) -> Callable[[], list[int]]:
    return lambda: [pid for server in servers for pid in family(server.process.pid)]


def cpu_line(cores: dict[str, float]) -> str:
    line = "cores used: " + ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
    if cores["others"] > NOISY_NEIGHBOURS:
        line += f"  (WARNING: {cores['others']:.2f} cores went to other processes)"
    return line


# --- runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    postgres: Postgres
    workdir: Path
    wrk: str
    accept_seconds: int
    grace: int
    connections: int
    wrk_threads: int
    messages: int
    rate: float
    paced_seconds: float
    stall: float
    modes: list[str]
    workers: bool  # one `missive serve --workers N` instead of N servers on N ports
    server_env: dict[str, str]


@dataclass
class AcceptFigures:
    accepted_per_s: float
    p50_ms: float  # the highest of the N wrk instances': at or above the combined one
    p99_ms: float
    max_ms: float
    accepted: int
    not_accepted: dict[str, int]
    rows_match: bool
    rows: str
    cores: dict[str, float]


@dataclass
class PhaseFigures:
    accepted: int
    accepted_per_s: float
    delivered_per_s: float
    p50_s: float  # 202 -> delivered webhook
    p99_s: float
    all_delivered: bool
    detail: list[str]
    cores: dict[str, float]


@dataclass
class Row:
    processes: int
    accept: AcceptFigures | None = None
    # topology ("separate", "in-serve") -> phase ("flat-out", "paced") -> figures
    e2e: dict[str, dict[str, PhaseFigures]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def start_apis(n: int, label: str, env: dict[str, str], config: Config, workdir: Path,
               into: list[Server]) -> list[Server]:
    """The API servers, appended to `into` one by one (to be stopped if one fails)."""
    if config.workers:
        into.append(start_serve(f"{label}-serve", env, workdir, workers=n))
    else:
        for i in range(n):
            into.append(start_serve(f"{label}-serve{i + 1}", env, workdir))
    return list(into)


def combine(results: list[Result]) -> Result:
    """One Result for N wrk runs side by side; percentiles: the highest of the N."""
    others: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for result in results:
        others.update(result.others)
        errors.update(result.socket_errors)
    return Result(accepted=sum(r.accepted for r in results), others=dict(others),
                  in_flight=sum(r.in_flight for r in results),
                  p50_ms=max(r.p50_ms for r in results), p99_ms=max(r.p99_ms for r in results),
                  max_ms=max(r.max_ms for r in results), socket_errors=dict(errors),
                  seconds=results[0].seconds)


def bench_accept(n: int, config: Config, row: Row) -> None:
    label = f"accept-{n}"
    workdir = config.workdir / label
    workdir.mkdir(parents=True)
    database = {"MISSIVE_DATABASE_URL": config.postgres.create(label)}
    token = make_token(*provision(workdir, env=database))
    env = missive_env(workdir, {**database, "MISSIVE_DISPATCH_IN_SERVE": "false", **config.server_env})
    log_from = config.postgres.log_size()
    servers: list[Server] = []
    try:
        start_apis(n, label, env, config, workdir, servers)
        meter = cpu_meter({"api": pids_of(servers), "postgres": config.postgres.pids})
        share = max(1, config.connections // len(servers))
        load = Load(share, max(1, min(share, config.wrk_threads // len(servers))),
                    config.accept_seconds, config.grace)
        with ThreadPoolExecutor(len(servers)) as pool:
            results = list(pool.map(lambda s: run_wrk(config.wrk, NOT_PINNED, s.url, token, load),
                                    servers))
        cores = meter(config.accept_seconds)
    finally:
        row.problems += stop_all(servers)
    row.problems += [f"{label}: PostgreSQL: {line}" for line in config.postgres.log_errors(log_from)]
    result = combine(results)
    rows = sum(Postgres.statuses(database["MISSIVE_DATABASE_URL"]).values())
    rows_match, rows_text = durability(rows, result)
    row.accept = AcceptFigures(result.rate, result.p50_ms, result.p99_ms, result.max_ms,
                               result.accepted, {**result.others, **result.socket_errors},
                               rows_match, rows_text, cores)
    progress(f"{label}: {result.rate:,.0f} accepted/s, p50 {result.p50_ms:.1f} ms, "
             f"p99 {result.p99_ms:.1f} ms; {rows_text}")
    progress(f"{label}: {cpu_line(cores)}")


def bench_e2e(n: int, mode: str, phase: Phase, config: Config, row: Row) -> None:
    label = f"e2e-{n}-{mode}-{phase.name}"
    workdir = config.workdir / label
    workdir.mkdir(parents=True)
    sink = start_sink(f"{label}-sink", workdir)
    try:
        database = {"MISSIVE_DATABASE_URL": config.postgres.create(label)}
        token = make_token(*provision(workdir, f"http://{HOST}:{sink.port}/status", env=database))
        in_serve = "true" if mode == "in-serve" else "false"
        env = missive_env(workdir, {**database, **SERVER_ENV, "MISSIVE_DISPATCH_IN_SERVE": in_serve,
                                    **config.server_env})
        log_from = config.postgres.log_size()
        servers: list[Server] = []
        try:
            apis = start_apis(n, label, env, config, workdir, servers)
            for i in range(n if mode == "separate" else 0):
                servers.append(start_dispatcher(f"{label}-dispatch{i + 1}", env, workdir))
            groups = {"api": pids_of(apis), "dispatch": pids_of(servers[len(apis):]),
                      "postgres": config.postgres.pids, "sink": pids_of([sink])}
            if mode != "separate":
                del groups["dispatch"]
            meter = cpu_meter(groups)
            sent = run_load([s.port for s in apis], request_bytes(token, apis[0].port),
                            phase.count, phase.rate, config.connections)
            progress(f"{label}: {len(sent.accepted):,} accepted in "
                     f"{sent.last_answer - sent.started:.1f} s; waiting for the webhooks")
            wait_delivered(sink, len(sent.accepted), config.stall,
                           lambda line: progress(f"{label}: {line}"))
            cores = meter()
            webhooks = [tuple(w) for w in sink_get(sink, "/records")]  # type: ignore[union-attr]
        finally:
            row.problems += stop_all(servers)
    finally:
        stop_server(sink)
    row.problems += [f"{label}: PostgreSQL: {line}" for line in config.postgres.log_errors(log_from)]
    statuses = Postgres.statuses(database["MISSIVE_DATABASE_URL"])
    # Cores of the Missive processes in dispatch.py's terms; only figures() reads them here.
    cpu = CpuUse(cores["api"] + cores.get("dispatch", 0.0), 0.0, cores["sink"], cores["load"])
    f = figures(Outcome(phase, sent, webhooks, statuses, cpu))
    detail = []
    if sent.others:
        detail.append(f"not accepted: {dict(sent.others)}")
    if f.missing:
        detail.append(f"{f.missing:,} accepted messages without a `delivered` webhook")
    if statuses != {"delivered": f.accepted}:
        detail.append(f"messages by status in the database: {statuses}")
    if f.repeated:
        detail.append(f"{f.repeated:,} webhooks arrived more than once")
    figures_ = PhaseFigures(f.accepted, f.accepted_rate, f.end_to_end_rate,
                            percentile(f.to_delivered, 0.5), percentile(f.to_delivered, 0.99),
                            not (sent.others or f.missing or statuses != {"delivered": f.accepted}),
                            detail, cores)
    row.e2e.setdefault(mode, {})[phase.name] = figures_
    row.problems += [f"{label}: {line}" for line in detail]
    progress(f"{label}: {f.accepted_rate:,.0f} accepted/s, {f.end_to_end_rate:,.0f} delivered/s, "
             f"202 -> delivered p50 {figures_.p50_s:.3f} s, p99 {figures_.p99_s:.3f} s; "
             f"all delivered: {'yes' if figures_.all_delivered else 'NO'}")
    progress(f"{label}: {cpu_line(cores)}")


def bench(n: int, config: Config, phases: list[Phase]) -> Row:
    row = Row(n)
    runs: list[tuple[str, Callable[[], None]]] = [(f"accept-{n}", lambda: bench_accept(n, config, row))]
    for mode in config.modes:
        for phase in phases:
            runs.append((f"e2e-{n}-{mode}-{phase.name}",
                         lambda mode=mode, phase=phase: bench_e2e(n, mode, phase, config, row)))
    for label, run in runs:
        print(f"{label} ...", file=sys.stderr, flush=True)
        try:
            run()
        except BenchFailure as exc:
            row.problems.append(f"{label} FAILED: {exc}")
            progress(f"{label} FAILED (see the end)")
    return row


# --- report --------------------------------------------------------------------------


def ms_pair(a: float, b: float) -> str:
    return f"{a:.1f} / {b:.1f}"


def s_pair(a: float, b: float) -> str:
    return "never" if b == float("inf") else f"{a:.3f} / {b:.3f}"


def table(rows: list[Row], config: Config) -> list[str]:
    paced = f"p50/p99 s @{config.rate:,.0f}/s" if config.paced_seconds > 0 else "p50/p99 s"
    head = (f"{'processes':>9}  {'accepted/s':>10}  {'p50/p99 ms':>13}  {'rows=202s':>9}  "
            f"{'e2e dispatch':<12}  {'delivered/s':>11}  {paced:>20}  {'all delivered':<13}")
    lines = [head, "-" * len(head)]
    for row in rows:
        a = row.accept
        accept = (f"{a.accepted_per_s:>10,.0f}  {ms_pair(a.p50_ms, a.p99_ms):>13}  "
                  f"{'yes' if a.rows_match else 'NO':>9}" if a else f"{'failed':>10}  {'':>13}  {'':>9}")
        modes = [(mode, row.e2e.get(mode, {})) for mode in config.modes] or [("-", {})]
        for i, (mode, phases) in enumerate(modes):
            flat, timed = phases.get("flat-out"), phases.get("paced")
            done = [p for p in (flat, timed) if p is not None]
            complete = len(done) == (2 if config.paced_seconds > 0 else 1)
            delivered = "yes" if complete and all(p.all_delivered for p in done) else "NO"
            lines.append(
                f"{row.processes if i == 0 else '':>9}  {accept if i == 0 else ' ' * 36}  {mode:<12}  "
                f"{f'{flat.delivered_per_s:,.0f}' if flat else 'failed':>11}  "
                f"{s_pair(timed.p50_s, timed.p99_s) if timed else '-':>20}  {delivered:<13}")
    wrk = "one wrk" if config.workers else "one wrk per server, p50/p99 the highest of them"
    return lines + [
        f"accept: {config.accept_seconds} s flat out ({wrk}); rows=202s: one messages row per 202",
        f"e2e: delivered/s of {config.messages:,} messages flat out (first request to last "
        "`delivered` webhook); p50/p99: 202 -> `delivered` webhook at the paced rate; all "
        "delivered: every message `delivered` in the database and by webhook",
    ]


def targets(rows: list[Row]) -> tuple[list[str], bool, bool]:
    accepted = [(r.accept.accepted_per_s, r.processes) for r in rows if r.accept]
    e2e = [(p.delivered_per_s, r.processes, mode) for r in rows for mode, phases in r.e2e.items()
           for name, p in phases.items() if name == "flat-out" and p.all_delivered]
    best_a = max(accepted, default=(0.0, 0))
    best_e = max(e2e, default=(0.0, 0, "-"))
    a_ok, e_ok = best_a[0] >= TARGET_ACCEPTED, best_e[0] >= TARGET_END_TO_END
    noise = max([r.accept.cores["others"] for r in rows if r.accept]
                + [p.cores["others"] for r in rows for phases in r.e2e.values() for p in phases.values()],
                default=0.0)
    warning = ([f"WARNING: other processes used up to {noise:.2f} cores during the runs "
                "(per run: stderr); these figures are not reliable"] if noise > NOISY_NEIGHBOURS else [])
    return warning + [
        f"target >= {TARGET_ACCEPTED:,} accepted messages/s on PostgreSQL: "
        f"{'MET' if a_ok else 'MISSED'} (best {best_a[0]:,.0f}/s with {best_a[1]} processes)",
        f"target >= {TARGET_END_TO_END:,} messages/s end to end through the sandbox on PostgreSQL: "
        f"{'MET' if e_ok else 'MISSED'} (best {best_e[0]:,.0f}/s with {best_e[1]} processes, "
        f"{best_e[2]} dispatch)",
    ], a_ok, e_ok


def as_json(rows: list[Row], config: Config, header: list[str], a_ok: bool, e_ok: bool) -> str:
    def finite(value: object) -> object:
        if isinstance(value, float) and value == float("inf"):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite({
        "header": header,
        "targets": {"accepted_per_s": TARGET_ACCEPTED, "accepted_met": a_ok,
                    "end_to_end_per_s": TARGET_END_TO_END, "end_to_end_met": e_ok},
        "settings": {"accept_seconds": config.accept_seconds, "connections": config.connections,
                     "messages": config.messages, "rate": config.rate,
                     "paced_seconds": config.paced_seconds, "e2e_modes": config.modes,
                     "workers": config.workers, "server_env": config.server_env},
        "rows": [asdict(row) for row in rows],
    }), indent=2)


# --- main ----------------------------------------------------------------------------


def serve_has_workers() -> bool:
    done = subprocess.run([sys.executable, "-m", "missive", "serve", "--help"],
                          capture_output=True, text=True, check=False)
    return "--workers" in done.stdout


def name_value(item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError("takes NAME=VALUE")
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,4", help="process counts to run (1,2,4)")
    parser.add_argument("--postgres-url", default="",
                        help="a PostgreSQL superuser URL to create databases on "
                             "(default: start a throwaway cluster)")
    parser.add_argument("--accept-seconds", type=int,
                        help="seconds of wrk load per accept run (10; --quick 3)")
    parser.add_argument("--grace", type=int, default=3,
                        help="seconds wrk waits for the last answers after sending stops (3)")
    parser.add_argument("--connections", type=int, default=64,
                        help="keep-alive connections in all, spread over the servers (64)")
    parser.add_argument("--wrk-threads", type=int, default=2,
                        help="wrk threads in all, at least one per wrk (2)")
    parser.add_argument("--messages", type=int,
                        help="messages sent flat out per end-to-end run (20000; --quick 2000)")
    parser.add_argument("--rate", type=float,
                        help="messages/s offered in the paced end-to-end runs (1000; --quick 500)")
    parser.add_argument("--seconds", type=float,
                        help="length of the paced runs; 0 skips them (10; --quick 2)")
    parser.add_argument("--e2e", default="separate,in-serve",
                        help="end-to-end topologies: separate (N serve + N dispatch), "
                             "in-serve (N serve dispatching), none (separate,in-serve)")
    parser.add_argument("--workers", action="store_true",
                        help="one `missive serve --workers N` on one port instead of N servers")
    parser.add_argument("--stall", type=float, default=30,
                        help="end a run when no webhook came for this long (30)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: shorter defaults (3 s of accept, 2,000 messages, 2 s at 500/s)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-': stdout)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (logs) and databases")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        type=name_value, help="environment for every Missive process")
    args = parser.parse_args(argv)
    defaults = {"accept_seconds": 10, "messages": 20_000, "rate": 1_000.0, "seconds": 10.0}
    quick = {"accept_seconds": 3, "messages": 2_000, "rate": 500.0, "seconds": 2.0}
    for name, value in (quick if args.quick else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        args.processes = [int(n) for n in args.processes.split(",")]
    except ValueError:
        parser.error("--processes takes counts separated by commas, e.g. 1,2,4")
    args.e2e = [] if args.e2e == "none" else args.e2e.split(",")
    if set(args.e2e) - {"separate", "in-serve"}:
        parser.error("--e2e takes separate, in-serve or both, or none")
    if min(args.processes) < 1 or min(args.accept_seconds, args.messages, args.connections) < 1:
        parser.error("--processes, --accept-seconds, --messages and --connections must be positive")
    if args.rate <= 0 or args.seconds < 0:
        parser.error("--rate must be positive and --seconds at least 0")
    args.server_env = dict(args.server_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    if args.workers and not serve_has_workers():
        print("this `missive serve` has no --workers option", file=sys.stderr)
        return 2
    phases = [Phase("flat-out", args.messages, None)]
    if args.seconds > 0:
        phases.append(Phase("paced", round(args.rate * args.seconds), args.rate))
    workdir = Path(tempfile.mkdtemp(prefix="missive-scaling-bench-"))
    with postgres_server(args.postgres_url) as postgres:
        header = [
            f"PostgreSQL at {postgres.url.rsplit('@', 1)[-1]}"
            f"{'' if args.postgres_url else ' (throwaway cluster, fsync off)'}; {code_version()}",
            f"accept: {args.accept_seconds} s of wrk per run, {args.connections} connections; "
            f"end to end: {args.messages:,} messages flat out"
            + (f", then {args.rate:,.0f}/s for {args.seconds:g} s" if args.seconds > 0 else "")
            + f"; nothing pinned, {len(os.sched_getaffinity(0))} CPUs",
            "N API processes: " + ("one `missive serve --workers N` on one port" if args.workers
                                   else "N `missive serve` on N ports, connections spread over them"),
        ]
        if args.server_env:
            header.append(f"Missive environment: {args.server_env}")
        for line in header:
            print(line, file=sys.stderr, flush=True)
        config = Config(postgres, workdir, wrk, args.accept_seconds, args.grace, args.connections,
                        args.wrk_threads, args.messages, args.rate, args.seconds, args.stall,
                        args.e2e, args.workers, args.server_env)
        rows = [bench(n, config, phases) for n in args.processes]
        if args.keep:
            postgres.created.clear()  # on --postgres-url, left for a look with psql
    problems = [p for row in rows for p in row.problems]
    lines, a_ok, e_ok = targets(rows)
    out = sys.stderr if args.json == "-" else sys.stdout
    print("\n" + "\n".join(header + [""] + table(rows, config) + [""] + lines), file=out)
    if problems:
        print(f"\nPROBLEMS ({len(problems)}):", file=out)
        for problem in problems:
            print(f"- {problem}", file=out)
    if args.json:
        text = as_json(rows, config, header, a_ok, e_ok)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.keep or problems:
        print(f"\nlogs kept in {workdir}", file=out)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
