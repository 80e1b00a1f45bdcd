"""SMPP benchmark: HTTP API -> dispatcher -> SMPP (2 binds) -> the SMSC simulator, with
delivery receipts back and `delivered` recorded and sent as webhooks.

One flat-out phase: --messages SMS posted as fast as the server takes them (JWT, keep-alive
connections, the load generator of bench/dispatch.py), the simulator answering every
submit_sm and sending a DELIVRD receipt at once. Prints accepted/s, delivered/s end to
end (first request to last `delivered` webhook) and how long the queue took to drain
after the last 202. Every message must end `delivered` in the database.

The simulator is tests/fakes/smsc (node, the npm `smpp` server; `make install-test`
installs it).

    .venv/bin/python bench/smpp.py [--messages 20000] [--binds 2] [--window 64] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from accept import (  # noqa: E402 - bench/ modules, next to this script
    HOST,
    free_port,
    make_token,
    missive_env,
    missive_json,
    plan_pinning,
    start_server,
    stop_checked,
    stop_server,
)
from dispatch import message_statuses, request_bytes, run_load, wait_delivered  # noqa: E402

from tests.fakes.fake_smsc import FakeSMSC  # noqa: E402

TARGET = 2_000  # messages/s end to end over 2 binds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--binds", type=int, default=2)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--stall", type=float, default=30.0)
    parser.add_argument("--no-pin", action="store_true",
                        help="let the server, the simulator, the sink and the load share both CPUs")
    options = parser.parse_args()
    progress = lambda text: print(f"  {text}", file=sys.stderr, flush=True)  # noqa: E731
    # As in bench/dispatch.py: Missive on one core; the load generator (this process), the
    # SMSC simulator and the webhook sink, which inherit this process's CPU, on the other.
    server_prefix: list[str] = []
    if not options.no_pin:
        pin = plan_pinning()
        if pin.load:
            os.sched_setaffinity(0, {int(pin.load[-1])})
            server_prefix = pin.server
        print(pin.note.replace("wrk", "simulator, sink and load generator"), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="missive-bench-smpp-"))
    sink_port = free_port()
    sink = start_server("sink", [sys.executable, str(BENCH_DIR / "webhook_sink.py"), "--port", str(sink_port)],
                        dict(os.environ), sink_port, workdir)
    try:
        with FakeSMSC() as smsc:
            data_dir = workdir / "data"
            account = missive_json(data_dir, "account", "create")
            app = missive_json(data_dir, "app", "create", "--name", "bench", "--api-key", account["api_key"],
                               "--status-url", f"http://{HOST}:{sink_port}/status")
            missive_json(data_dir, "channel", "add", "sms", "--host", HOST, "--port", str(smsc.port),
                         "--system-id", "bench", "--password", "bench", "--binds", str(options.binds),
                         "--window", str(options.window), "--default", "--api-key", account["api_key"], "--json")
            token = make_token(app["id"], app["private_key"])
            port = free_port()
            server = start_server("missive", [*server_prefix, sys.executable, "-m", "missive", "serve", "--host", HOST, "--port", str(port)],
                                  missive_env(data_dir, {}), port, workdir)
            try:
                smsc.wait_for(lambda s: s["bound"] >= options.binds, timeout=20)
                time.sleep(0.5)
                sent = run_load(port, request_bytes(token, port), options.messages, None, options.connections)
                accepted_for = sent.last_answer - sent.started
                progress(f"{len(sent.accepted):,} accepted in {accepted_for:.1f} s; waiting for receipts and webhooks")
                wait_delivered(sink, len(sent.accepted), options.stall, progress)
                finished = time.time()
            finally:
                stop_server(server)
            stop_checked(server)
            submits = len(smsc.submits())
    finally:
        stop_server(sink)
    statuses = message_statuses(data_dir / "missive.db")
    total = finished - sent.started
    rate = len(sent.accepted) / total
    print(f"messages: {len(sent.accepted):,} accepted ({dict(sent.others) or 'no errors'}), submit_sm seen: {submits:,}")
    print(f"accepted/s: {len(sent.accepted) / accepted_for:,.0f}")
    print(f"delivered/s end to end (first request -> last delivered webhook): {rate:,.0f}  "
          f"(target {TARGET:,}: {'met' if rate >= TARGET else 'missed'})")
    print(f"queue drained {finished - sent.last_answer:.1f} s after the last 202")
    print(f"statuses in the database: {statuses}")
    return 0 if statuses.get("delivered", 0) == len(sent.accepted) else 1


if __name__ == "__main__":
    raise SystemExit(main())
