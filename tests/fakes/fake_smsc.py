"""A fake SMSC speaking real SMPP 3.4: `tests/fakes/smsc/smsc.js` (on the `smpp` npm
package) in a node subprocess, driven over its JSON control API.

    with FakeSMSC() as smsc:                  # FakeSMSC(tls=(key_pem, cert_pem)) for TLS
        smsc.configure(credentials={"missive": "secret"}, resp_id_format="hex")
        smsc.configure(errors=[{"status": 0x58, "count": 2}])   # next 2 submits throttled
        smsc.configure(receipts={"mode": "delay", "delay_ms": 200, "stat": "UNDELIV"})
        ... MISSIVE_SMPP_PORT=smsc.port ...
        state = smsc.wait_for(lambda s: len(s["submits"]) >= 1)
        bytes.fromhex(state["submits"][0]["short_message"])      # exactly as on the wire
        state["submits"][0]["validity_period"], state["submits"][0]["tlvs"]  # "...R", {"0x1400": hex}
        smsc.receipt(state["submits"][0]["message_id"], stat="EXPIRED", err="001")
        smsc.deliver("447700900001", "Missive", "hello", encoding="ucs2", parts=2)

Settings (`configure`, merged; `reset` restores these and clears the records):
credentials None (anyone binds) or {system_id: password}; refuse_bind False;
resp_id_format "dec" | "hex"; errors [] of {"status", "count"}; throttle_per_second None;
submit_delay_ms 0; drop_after None (the Nth submit from now kills its socket unanswered);
redeliver_ms 500; next_message_id (ids otherwise keep counting up across resets);
receipts {"mode": "immediate" | "delay" | "none", "delay_ms": 0, "stat": "DELIVRD",
"err": "000", "reorder": False, "tlv": True, "id_format": "dec", "stat_by_destination": {}}.

`state()` is {"binds", "bound", "submits", "delivers", "enquire_links", "max_outstanding",
"queued", "sessions", "config", "next_message_id"}; see smsc.js for each record's fields.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Self

import httpx

SMSC_DIR = Path(__file__).parent / "smsc"
START_TIMEOUT = 15.0


class FakeSMSC:
    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        """`tls` is (key file, certificate file), both PEM: SMPP is then served over TLS."""
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = 0
        self.control_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._http: httpx.Client | None = None

    # -- control API -----------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self._http is not None, "fake SMSC: not started (use it as a context manager)"
        response = self._http.request(method, path, json=body)
        if response.status_code != 200:
            raise AssertionError(f"fake SMSC: {method} {path} -> {response.status_code} {response.text}")
        return response.json()

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/state")

    def configure(self, **settings: Any) -> None:
        self._call("POST", "/config", settings)

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def receipt(self, message_id: int | str, stat: str = "DELIVRD", err: str = "000", **extra: Any) -> dict[str, Any]:
        """Sends a delivery receipt now and returns {"sent", "queued", "status"} once it
        is answered. A message_id never issued needs source_addr/destination_addr (the
        receipt's own) in `extra`; a str id is written as is; id_format, tlv, text too."""
        return self._call("POST", "/receipt", {"message_id": message_id, "stat": stat, "err": err, **extra})

    def deliver(
        self,
        source_addr: str,
        destination_addr: str,
        text: str,
        encoding: str = "gsm",
        parts: int | None = None,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """Sends an inbound message (split into concatenated parts when `parts` > 1 or too
        long) and returns {"sent", "queued", "statuses"} once every part is answered; with
        nothing bound the parts are queued for the next bind and "sent" is 0."""
        body = {"source_addr": source_addr, "destination_addr": destination_addr, "text": text,
                "encoding": encoding, "parts": parts, "reverse": reverse}
        return self._call("POST", "/deliver", body)

    def drop(self) -> None:
        """Destroys every SMPP connection at once (no unbind)."""
        self._call("POST", "/drop", {})

    def unbind(self) -> None:
        """Sends unbind on every bound session; each is closed when it answers."""
        self._call("POST", "/unbind", {})

    def submits(self) -> list[dict[str, Any]]:
        return self.state()["submits"]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"fake SMSC: timed out; last state {json.dumps(state, indent=1)}")
            time.sleep(0.02)

    def stderr(self) -> str:
        """What node wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    # -- the process -----------------------------------------------------------------

    def __enter__(self) -> Self:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("fake SMSC: `node` is not on PATH (Node.js 20 is needed for the SMPP tests)")
        if not (SMSC_DIR / "node_modules" / "smpp").is_dir():
            raise RuntimeError(f"fake SMSC: {SMSC_DIR}/node_modules is missing; run `make install-test`")
        command = [node, str(SMSC_DIR / "smsc.js"), "--port", "0", "--control-port", "0"]
        if self.tls is not None:
            command += ["--tls-key", str(self.tls[0]), "--tls-cert", str(self.tls[1])]
        # A file, not a pipe: nobody drains it while the tests run. Closed in __exit__.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        # stdin stays open and unused: node exits when it closes, that is when we go.
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        try:
            ports = json.loads(self._read_line())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.port = ports["smpp_port"]
        self.control_url = f"http://{self.host}:{ports['control_port']}"
        self._http = httpx.Client(base_url=self.control_url, timeout=30.0)
        return self

    def _read_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        line = b""
        deadline = time.monotonic() + START_TIMEOUT
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"fake SMSC: no ports within {START_TIMEOUT} s; stderr:\n{self.stderr()}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"fake SMSC: node exited ({self._proc.wait()}); stderr:\n{self.stderr()}")
            line += chunk
        return line.decode()

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
