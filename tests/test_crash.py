"""SIGKILL at any point loses nothing: the crash tests of issue 3.

A real server (a subprocess) dispatches to the sandbox channel, whose log
(MISSIVE_SANDBOX_LOG, one "uuid attempt" line per send) is the provider's own record of
what reached it, and delivers status webhooks to a real receiver on 127.0.0.1. The
server is killed with SIGKILL in the middle of its work and started again on the same
data directory; then every accepted message must have reached the sandbox and its final
status, and every status webhook must have been accepted by the receiver.

Delivery is at least once: what was in flight at the kill (sends whose result was not
yet committed, webhooks whose answer was not yet recorded) is done again once its lease
runs out. The duplicates are counted and printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from missive.dispatch.send_window import RESULT_TARGET, WINDOW_FLOOR
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, missive_json, query, start_server

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme",
       "text": "crash test"}
# The statuses the sandbox gives an ordinary SMS recipient, each one status webhook.
STATUSES = ("submitted", "delivered")
# Leases, polling and webhook retries short enough that a restart catches up in seconds.
FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.5",
    "MISSIVE_LEASE_SECONDS": "5",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.1",
}


def provisioned_with_status_url(data_dir: Path, status_url: str, env: dict[str, str]) -> Server:
    """tests.harness.provisioned_server, with the account's status URL set before start.

    The messages are sent with Basic auth, so their status webhooks go to the account's
    status URL.
    """
    account = missive_json(data_dir, "account", "create")
    updated = missive(data_dir, "account", "update", "--api-key", account["api_key"],
                      "--status-url", status_url)
    assert updated.returncode == 0, updated.stderr
    server = start_server(data_dir, env=env)
    server.api_key, server.api_secret = account["api_key"], account["api_secret"]
    server.signature_secret = account["signature_secret"]
    return server


def accept(server: Server, count: int, concurrency: int = 32) -> list[str]:
    """POST `count` SMS over `concurrency` keep-alive connections; the 202s' message_uuids.

    A bare asyncio HTTP/1.1 client: httpx costs several times the server's own work
    per request, and would make this the slow end.
    """
    auth = base64.b64encode(f"{server.api_key}:{server.api_secret}".encode()).decode()
    body = orjson.dumps(SMS)
    request = (
        f"POST /v1/messages HTTP/1.1\r\nHost: {server.url.removeprefix('http://')}\r\n"
        f"Authorization: Basic {auth}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    host, port = server.url.removeprefix("http://").split(":")
    uuids: list[str] = []
    left = iter(range(count))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in left:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(_header(head, b"content-length") or 0)
                answer = await reader.readexactly(length)
                assert head.startswith(b"HTTP/1.1 202 "), (head, answer)
                uuids.append(orjson.loads(answer)["message_uuid"])
        finally:
            writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(concurrency)))

    asyncio.run(run())
    return uuids


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def sandbox_sends(log: Path) -> Counter[str]:
    """Sends per message_uuid, from the sandbox's own log."""
    if not log.exists():
        return Counter()
    return Counter(line.split(" ", 1)[0] for line in log.read_text().splitlines() if line)


def accepted_pairs(receiver: WebhookReceiver) -> Counter[tuple[str, str]]:
    """(message_uuid, status) -> how many times the receiver accepted (2xx) that webhook."""
    pairs: Counter[tuple[str, str]] = Counter()
    for hook in receiver.snapshot(accepted_only=True):
        payload = hook.json
        pairs[(payload["message_uuid"], payload["status"])] += 1
    return pairs


def wait_until(
    what: str, done: Callable[[], bool], timeout: float, detail: Callable[[], str]
) -> float:
    """Poll `done` until it holds; the seconds it took. Fails with `detail()` on timeout."""
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}: "
                                 f"{detail()}")
        time.sleep(0.2)
    return time.monotonic() - start


def send_rate(*logs: Path, over: float = 0.5) -> float:
    """Sends per second reaching the sandbox (the logs' sum) over the last `over` seconds."""
    before = sum(sum(sandbox_sends(log).values()) for log in logs)
    time.sleep(over)
    return (sum(sum(sandbox_sends(log).values()) for log in logs) - before) / over


def aimed_bound(rate: float) -> int:
    """What the send window aims to keep out for a dispatcher sending `rate` per second
    to a provider that answers at once: the sends answered within RESULT_TARGET, and at
    least the window's floor (dispatch/worker.py). An aim, not a guarantee: on a loaded
    machine a commit can take longer, and the window shrinks only once it has seen that;
    printed beside what the kill found out."""
    return math.ceil(rate * RESULT_TARGET) + WINDOW_FLOOR


def unrecorded(db: Path, sent: Counter[str]) -> set[str]:
    """Of the messages the sandbox received, those whose send result is not committed:
    still `accepted` in the database. Read just after a kill, they are exactly what the
    killed process had out (handed to the channel, result not yet recorded)."""
    recorded = {uuid for (uuid,) in query(db, "SELECT uuid FROM messages WHERE status <> 'accepted'")}
    return set(sent) - recorded


def sent_again(sends: Counter[str], at_kill: Counter[str]) -> set[str]:
    """Messages the sandbox received before the kill and again after it."""
    return {uuid for uuid, n in at_kill.items() if sends[uuid] > n}


def kill(server: Server) -> None:
    server.process.kill()
    server.process.wait(timeout=10)


def check_everything_arrived(
    db: Path, log: Path, receiver: WebhookReceiver, uuids: list[str], timeout: float
) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Wait until every message reached the sandbox, `delivered` and both its webhooks."""
    wanted = set(uuids)
    pairs_wanted = {(u, s) for u in uuids for s in STATUSES}

    def statuses() -> Counter[str]:
        return Counter(dict(query(db, "SELECT status, COUNT(*) FROM messages GROUP BY status")))

    wait_until("every message reached the sandbox", lambda: wanted <= set(sandbox_sends(log)),
               timeout, lambda: f"{len(wanted - set(sandbox_sends(log)))} never sent")
    wait_until("every message is delivered", lambda: statuses()["delivered"] == len(uuids),
               timeout, lambda: f"statuses {dict(statuses())}")
    wait_until("every status webhook was accepted",
               lambda: pairs_wanted <= set(accepted_pairs(receiver)), timeout,
               lambda: f"{len(pairs_wanted - set(accepted_pairs(receiver)))} of "
                       f"{len(pairs_wanted)} missing")
    sends, pairs = sandbox_sends(log), accepted_pairs(receiver)
    assert set(sends) == wanted, "the sandbox saw messages nobody accepted"
    assert set(pairs) == pairs_wanted, "webhooks for statuses that never happened"
    # A webhook's answer is recorded after the receiver has it: wait for those records.
    def states() -> dict[str, int]:
        return dict(query(db, "SELECT state, COUNT(*) FROM webhook_outbox GROUP BY state"))

    wait_until("every webhook is recorded delivered", lambda: states() == {"delivered": len(pairs_wanted)},
               timeout, lambda: f"outbox {states()}")
    return sends, pairs


def duplicates(counts: Counter) -> tuple[int, int]:
    """(keys seen more than once, extra deliveries in all)."""
    repeated = [n for n in counts.values() if n > 1]
    return len(repeated), sum(n - 1 for n in repeated)


def test_sigkill_while_dispatching_loses_nothing(tmp_path: Path) -> None:
    count = 5_000
    data_dir, log = tmp_path / "data", tmp_path / "sandbox.log"
    # Modest in-flight limits, so that dispatch trails the 5,000 posts and the kill finds
    # most of the work still to do (with the defaults, PostgreSQL nearly finishes first).
    in_flight, per_target = 128, 32
    env = {**FAST, "MISSIVE_SANDBOX_LOG": str(log), "MISSIVE_DISPATCH_MAX_IN_FLIGHT": str(in_flight),
           "MISSIVE_WEBHOOK_PER_TARGET": str(per_target)}
    db = data_dir  # the database of this data directory, SQLite or PostgreSQL
    with WebhookReceiver() as receiver:
        server = provisioned_with_status_url(data_dir, receiver.url("/status"), env)
        try:
            started = time.monotonic()
            uuids = accept(server, count)
            accepted_in = time.monotonic() - started
            assert len(set(uuids)) == count
            # Kill once the dispatcher is well under way, but far from done.
            receiver.wait_for(lambda hooks: len(hooks) >= 300, timeout=30)
            rate = send_rate(log)
            kill(server)
        finally:
            server.stop()
        at_kill = len(receiver.snapshot())
        sent_at_kill = sandbox_sends(log)
        out_at_kill = unrecorded(db, sent_at_kill)
        pairs_at_kill = accepted_pairs(receiver)
        print(f"\naccepted {count} in {accepted_in:.1f} s; killed after "
              f"{sum(sent_at_kill.values())} sandbox sends and {at_kill} webhooks of {2 * count}")
        # Repeats before the kill are not the crash's: a lease ran out under load.
        print(f"before the kill: {duplicates(sent_at_kill)[0]} messages sent more than once, "
              f"{duplicates(pairs_at_kill)[0]} webhooks accepted more than once")
        assert at_kill < 2 * count * 0.9, (
            f"the kill came too late to test anything: {at_kill} of {2 * count} webhooks done")

        restarted = start_server(data_dir, env=env)
        try:
            began = time.monotonic()
            sends, pairs = check_everything_arrived(db, log, receiver, uuids, timeout=75)
            print(f"after the restart, everything arrived in {time.monotonic() - began:.1f} s")
        finally:
            restarted.stop()

    send_dups, extra_sends = duplicates(sends)
    hook_dups, extra_hooks = duplicates(pairs)
    print(f"sandbox: {sum(sends.values())} sends for {count} messages; {send_dups} messages "
          f"sent more than once ({100 * send_dups / count:.2f}%), {extra_sends} extra sends")
    print(f"webhooks: {sum(pairs.values())} accepted for {len(pairs)} (uuid, status) pairs; "
          f"{hook_dups} pairs delivered more than once ({100 * hook_dups / count:.2f}% of "
          f"messages), {extra_hooks} extra")
    # At least once, and never more than what was out at the kill: a message is sent
    # again only if its result was not committed when the process died, and the send
    # window never lets more than the in-flight limit out.
    again = sent_again(sends, sent_at_kill)
    print(f"sending {rate:.0f}/s at the kill: {len(out_at_kill)} sends out (the window aims at "
          f"{aimed_bound(rate)} or fewer), {len(again)} sent again")
    assert again <= out_at_kill, (
        f"{len(again - out_at_kill)} messages whose result was committed were sent again")
    assert len(out_at_kill) <= in_flight, f"{len(out_at_kill)} sends out at once, over {in_flight}"
    assert extra_sends <= in_flight, (
        f"{send_dups} messages sent more than once ({100 * send_dups / count:.2f}%), "
        f"{duplicates(sent_at_kill)[0]} of them before the kill")
    assert extra_hooks <= 2 * per_target, (
        f"{hook_dups} status webhooks accepted more than once ({100 * hook_dups / count:.2f}% "
        f"of messages), {duplicates(pairs_at_kill)[0]} of them before the kill")


def test_sigkill_with_webhooks_pending_loses_none(tmp_path: Path) -> None:
    count = 200
    data_dir, log = tmp_path / "data", tmp_path / "sandbox.log"
    # A low backoff cap, so webhooks refused for seconds are retried soon after the restart.
    env = {**FAST, "MISSIVE_SANDBOX_LOG": str(log), "MISSIVE_WEBHOOK_BACKOFF_CAP": "1"}
    db = data_dir  # the database of this data directory, SQLite or PostgreSQL
    with WebhookReceiver() as receiver:
        receiver.respond = lambda hook: 500
        server = provisioned_with_status_url(data_dir, receiver.url("/status"), env)
        try:
            uuids = accept(server, count, concurrency=8)

            def all_pending_and_refused() -> bool:
                pending = query(db, "SELECT COUNT(*) FROM webhook_outbox WHERE state = 'pending'")
                return pending[0][0] == 2 * count and len(receiver.snapshot()) >= 4 * count

            # Every status webhook is in the outbox and the receiver has refused twice as
            # many requests as there are webhooks: the kill finds them all pending.
            wait_until("every webhook is pending and many were refused", all_pending_and_refused,
                       30, lambda: f"{len(receiver.snapshot())} refused; " + str(query(
                           db, "SELECT state, COUNT(*) FROM webhook_outbox GROUP BY state")))
            kill(server)
        finally:
            server.stop()
        assert not receiver.snapshot(accepted_only=True)
        attempts = Counter(dict(query(db, "SELECT attempts, COUNT(*) FROM webhook_outbox "
                                          "GROUP BY attempts")))
        print(f"\nkilled with {2 * count} webhooks pending after {len(receiver.snapshot())} "
              f"refusals; {attempts[0]} of them never tried")
        receiver.respond = lambda hook: 200

        restarted = start_server(data_dir, env=env)
        try:
            sends, pairs = check_everything_arrived(db, log, receiver, uuids, timeout=30)
        finally:
            restarted.stop()
    send_dups, _ = duplicates(sends)
    hook_dups, extra_hooks = duplicates(pairs)
    print(f"refused webhooks then SIGKILL: {send_dups} messages sent twice, {hook_dups} "
          f"webhooks accepted more than once ({extra_hooks} extra)")
