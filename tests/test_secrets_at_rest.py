"""Secrets at rest: provider credentials encrypted in the database, yet every channel works.

A real `missive serve` with an SMSC simulator that binds only with the right password, a
fake Graph API and a fake Viber API that answer only with the right token. The raw rows
are read with plain SQL. Tests run in order on one server: links are made, used, a link
is slipped in as plaintext (as stored before encryption existed), the key is rotated and
the server restarted, then the logs and every answer of a whole run are searched for the
secrets. The key given by MISSIVE_SECRET_KEY has its own tests at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from missive.cache import CACHE_SECONDS
from missive.cli_support import account_id_for
from missive.secrets_box import KEY_FILE, SecretKeyError, key_id, new_key, parse_keys, sealed_id
from missive.store.db import make_engine
from missive.store.links import list_links
from missive.store.tables import channel_links
from tests.fakes.fake_graph import FakeGraph
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.fake_viber import FakeViber
from tests.harness import (
    Server,
    missive,
    missive_json,
    on_postgres,
    provisioned_server,
    query,
    settings_for,
    start_server,
    sync_engine,
)

SYSTEM_ID, SMPP_PASSWORD, WRONG_PASSWORD = "acme", "Sm9pPw4q", "Wr0ng7Zx"
PAGE, PAGE_TOKEN, APP_SECRET = "5566778899", "EAAPageTok-9f8e7d6c5b4a", "AppSecr-3c2b1a0f"
SERVICE, VIBER_TOKEN = "rest-bot", "4453b6ac1s345z78-viberTok-e0vc5f"
# Links written straight into the table, as Missive stored them before encryption.
LEGACY_PAGE, LEGACY_TOKEN, LEGACY_SECRET = "6677889900", "EAALegacyTok-1a2b3c4d", "LegacySecr-5e6f7a8b"
LATER_PAGE, LATER_TOKEN, LATER_SECRET = "7788990011", "EAALaterTok-0a9b8c7d", "LaterSecr-6e5f4a3b"
# Given in requests that are refused.
REFUSED_TOKEN, REFUSED_PASSWORD = "EAARefusedTok-77aa66bb", "Refu5edPwTooLong"
SECRETS = (SMPP_PASSWORD, WRONG_PASSWORD, PAGE_TOKEN, APP_SECRET, VIBER_TOKEN, LEGACY_TOKEN, LEGACY_SECRET,
           LATER_TOKEN, LATER_SECRET, REFUSED_TOKEN, REFUSED_PASSWORD)
USER = "01234567890A="

FAST = {
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": "0.3",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
    # Every line a library would write too: the search at the end reads them all.
    "MISSIVE_LOG_LEVEL": "debug",
}


@dataclass
class Live:
    server: Server
    smsc: FakeSMSC
    graph: FakeGraph
    viber: FakeViber
    env: dict[str, str]
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every answer the server and the CLI gave during the run: searched for secrets at the end.
    answers: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("auth", self.server.basic)
        with self.server.client() as client:
            response = client.request(method, path, **kwargs)
        self.answers.append(response.text)
        return response

    def send(self, body: dict[str, Any], **kwargs: Any) -> str:
        response = self.request("POST", "/v1/messages", json=body, **kwargs)
        assert response.status_code == 202, response.text
        return str(response.json()["message_uuid"])

    def wait_status(self, message_uuid: str, wanted: tuple[str, ...] = ("submitted", "delivered", "read")) -> str:
        deadline = time.monotonic() + 20
        while True:
            status = self.request("GET", f"/v1/messages/{message_uuid}").json()["status"]
            if status in wanted:
                return str(status)
            assert time.monotonic() < deadline, f"{message_uuid} still {status}"
            time.sleep(0.1)

    def cli_json(self, *args: str) -> Any:
        result = missive_json(self.data_dir, *args)
        self.answers.append(json.dumps(result))
        return result


def stored(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Each link's config exactly as the database holds it."""
    rows = query(data_dir, "SELECT id, config FROM channel_links")
    return {link_id: json.loads(config) if isinstance(config, str) else config for link_id, config in rows}


def signed(raw: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-hub-signature-256": f"sha256={digest}"}


def page_event(page: str) -> bytes:
    mid = f"m_{uuidlib.uuid4().hex[:10]}"
    body = {"object": "page", "entry": [{"id": page, "time": 1700000000000, "messaging": [
        {"sender": {"id": "psid-9"}, "recipient": {"id": page}, "timestamp": 1700000000000,
         "message": {"mid": mid, "text": "hello"}}]}]}
    return json.dumps(body).encode()


def sms(to: str, sender: str = "Acme") -> dict[str, Any]:
    return {"channel": "sms", "message_type": "text", "to": to, "from": sender, "text": "at rest"}


def messenger(to: str, page: str = PAGE) -> dict[str, Any]:
    return {"channel": "messenger", "message_type": "text", "to": to, "from": page, "text": "at rest"}


def viber(text: str) -> dict[str, Any]:
    return {"channel": "viber_service", "message_type": "text", "to": USER, "from": SERVICE, "text": text}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("secrets")
    with FakeSMSC() as smsc, FakeGraph() as graph, FakeViber(auth_token=VIBER_TOKEN) as fake_viber:
        smsc.configure(credentials={SYSTEM_ID: SMPP_PASSWORD})
        env = {**FAST, "MISSIVE_GRAPH_API_URL": graph.url, "MISSIVE_VIBER_API_URL": fake_viber.url()}
        server = provisioned_server(data_dir, env=env)
        state = Live(server, smsc, graph, fake_viber, env)
        try:
            state.links["sms"] = state.cli_json(
                "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port), "--system-id", SYSTEM_ID,
                "--password", SMPP_PASSWORD, "--default", "--json")
            state.links["messenger"] = state.cli_json(
                "channel", "add", "messenger", "--page-id", PAGE, "--page-token", PAGE_TOKEN, "--app-secret", APP_SECRET,
                "--verify-token", "verify-at-rest", "--default", "--json")
            created = state.request("POST", "/v1/channels", json={
                "kind": "viber", "channel": "viber_service", "name": "bot", "default": True,
                "config": {"service_id": SERVICE, "auth_token": VIBER_TOKEN, "sender_name": "Acme"}})
            assert created.status_code == 201, created.text
            state.links["viber"] = created.json()
            yield state
        finally:
            state.server.stop()


def current_key_id(data_dir: Path) -> str:
    return key_id(parse_keys((data_dir / KEY_FILE).read_text(), KEY_FILE)[0])


def test_the_key_file_is_made_on_first_use_readable_by_its_owner_only(live: Live) -> None:
    path = live.data_dir / KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(parse_keys(path.read_text(), KEY_FILE)) == 1


def test_secrets_are_stored_encrypted_and_nothing_else_is(live: Live) -> None:
    configs = stored(live.data_dir)
    kid = current_key_id(live.data_dir)
    sms_config, page_config = configs[live.links["sms"]["id"]], configs[live.links["messenger"]["id"]]
    viber_config = configs[live.links["viber"]["id"]]
    for value in (sms_config["password"], page_config["page_token"], page_config["app_secret"], viber_config["auth_token"]):
        assert value.startswith(f"enc:v1:{kid}:"), value
    # Only the declared secrets: the rest stays readable (and routable) as it was.
    assert (sms_config["system_id"], page_config["page_id"], page_config["verify_token"]) == (SYSTEM_ID, PAGE, "verify-at-rest")
    assert viber_config["service_id"] == SERVICE
    raw = json.dumps(configs)
    assert not [s for s in SECRETS if s in raw]
    if not on_postgres():
        # Nowhere in the database's files either (never written there in plaintext).
        files = b"".join(p.read_bytes() for p in live.data_dir.glob("missive.db*"))
        assert not [s for s in SECRETS if s.encode() in files]


def test_api_secrets_are_stored_as_salted_hashes(live: Live) -> None:
    [(salt, secret_hash)] = query(live.data_dir, "SELECT secret_salt, secret_hash FROM accounts WHERE api_key = :k",
                                  k=live.server.api_key)
    assert secret_hash == hashlib.sha256(f"{salt}:{live.server.api_secret}".encode()).hexdigest()
    everything = json.dumps(query(live.data_dir, "SELECT * FROM accounts"), default=str)
    assert live.server.api_secret not in everything


def test_sms_binds_with_the_decrypted_password_and_sends(live: Live) -> None:
    state = live.smsc.wait_for(lambda s: s["bound"] >= 1, timeout=15)
    assert state["binds"] and all(b["ok"] and b["system_id"] == SYSTEM_ID for b in state["binds"])
    message_uuid = live.send(sms("447700900301"))
    live.smsc.wait_for(lambda s: any(x["destination_addr"] == "447700900301" for x in s["submits"]), timeout=15)
    live.wait_status(message_uuid)


def test_messenger_sends_with_the_page_token_and_checks_the_app_secret(live: Live) -> None:
    message_uuid = live.send(messenger("psid-rest-1"))
    found = live.graph.wait_for(lambda rs: any(r.body.get("recipient", {}).get("id") == "psid-rest-1" for r in rs))
    assert [r.query["access_token"] for r in found if r.body.get("recipient", {}).get("id") == "psid-rest-1"] == [PAGE_TOKEN]
    live.wait_status(message_uuid)
    raw = page_event(PAGE)
    assert live.request("POST", "/inbound/messenger", content=raw, headers=signed(raw, APP_SECRET), auth=None).status_code == 200
    # Signed with what the database holds: refused, the app secret is compared in plaintext.
    ciphertext = stored(live.data_dir)[live.links["messenger"]["id"]]["app_secret"]
    assert live.request("POST", "/inbound/messenger", content=raw, headers=signed(raw, ciphertext), auth=None).status_code == 401


def test_viber_sends_with_its_auth_token(live: Live) -> None:
    message_uuid = live.send(viber("rest-1"))
    sent = live.viber.wait_for(lambda calls: any(c.json.get("text") == "rest-1" for c in calls))
    assert [c.headers["x-viber-auth-token"] for c in sent if c.json.get("text") == "rest-1"] == [VIBER_TOKEN]
    assert live.wait_status(message_uuid) in ("submitted", "delivered")


def insert_plaintext_link(live: Live, page: str, token: str, secret: str, application_id: str | None) -> str:
    [(account_id,)] = query(live.data_dir, "SELECT id FROM accounts WHERE api_key = :k", k=live.server.api_key)
    link_id = str(uuidlib.uuid4())
    engine = sync_engine(live.data_dir)
    try:
        with engine.begin() as conn:
            conn.execute(channel_links.insert().values(
                id=link_id, account_id=account_id, application_id=application_id, channel="messenger", kind="messenger",
                name=f"legacy-{page}", tps=None, is_default=0, created_at=time.time(),
                config={"page_id": page, "page_token": token, "app_secret": secret, "verify_token": "v"}))
    finally:
        engine.dispose()
    return link_id


def test_a_link_stored_in_plaintext_still_works_and_is_encrypted_at_its_next_write(live: Live) -> None:
    # The application's own link: messages from its page go through it.
    live.links["legacy"] = {"id": insert_plaintext_link(live, LEGACY_PAGE, LEGACY_TOKEN, LEGACY_SECRET, live.server.app_id)}
    live.links["later"] = {"id": insert_plaintext_link(live, LATER_PAGE, LATER_TOKEN, LATER_SECRET, None)}
    time.sleep(CACHE_SECONDS + 0.5)  # the dispatcher's cache of the account's links
    live.send(messenger("psid-legacy-1", LEGACY_PAGE), auth=None, headers=live.server.bearer())
    found = live.graph.wait_for(lambda rs: any(r.body.get("recipient", {}).get("id") == "psid-legacy-1" for r in rs))
    assert [r.query["access_token"] for r in found if r.body.get("recipient", {}).get("id") == "psid-legacy-1"] == [LEGACY_TOKEN]
    raw = page_event(LEGACY_PAGE)
    assert live.request("POST", "/inbound/messenger", content=raw, headers=signed(raw, LEGACY_SECRET), auth=None).status_code == 200

    renamed = live.request("PATCH", f"/v1/channels/{live.links['later']['id']}", json={"name": "renamed"})
    assert renamed.status_code == 200, renamed.text
    configs = stored(live.data_dir)
    later, legacy = configs[live.links["later"]["id"]], configs[live.links["legacy"]["id"]]
    kid = current_key_id(live.data_dir)
    assert sealed_id(later["page_token"]) == sealed_id(later["app_secret"]) == kid
    assert (legacy["page_token"], legacy["app_secret"]) == (LEGACY_TOKEN, LEGACY_SECRET)  # untouched until rotate


def test_rotate_encrypts_everything_with_a_new_key_and_links_work_after_a_restart(live: Live) -> None:
    before, old_kid = stored(live.data_dir), current_key_id(live.data_dir)
    rotated = live.cli_json("secrets", "rotate", "--json")
    assert rotated["key_id"] != old_kid and rotated["key_id"] == current_key_id(live.data_dir)
    # sms 1, messenger 2, viber 1, the two legacy links 2 each; 2 of them were plaintext.
    assert (rotated["links"], rotated["values"], rotated["from_plaintext"]) == (5, 8, 2)
    assert len(parse_keys((live.data_dir / KEY_FILE).read_text(), KEY_FILE)) == 1  # the old key is gone
    assert (live.data_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600
    after = stored(live.data_dir)
    secret_fields = {"sms": ["password"], "messenger": ["page_token", "app_secret"], "viber": ["auth_token"],
                     "legacy": ["page_token", "app_secret"], "later": ["page_token", "app_secret"]}
    for name, fields in secret_fields.items():
        link_id = live.links[name]["id"]
        for key in fields:
            assert sealed_id(after[link_id][key]) == rotated["key_id"], (name, key)
            assert after[link_id][key] != before[link_id][key]
    assert not [s for s in SECRETS if s in json.dumps(after)]

    # The running server follows the key file: what it writes now uses the new key.
    assert live.request("PATCH", f"/v1/channels/{live.links['viber']['id']}", json={"name": "bot-2"}).status_code == 200
    assert sealed_id(stored(live.data_dir)[live.links["viber"]["id"]]["auth_token"]) == rotated["key_id"]

    live.server.stop()
    binds_before = len(live.smsc.state()["binds"])
    fresh = start_server(live.data_dir, env=live.env)
    live.server = dataclasses.replace(live.server, url=fresh.url, process=fresh.process, log_path=fresh.log_path)
    state = live.smsc.wait_for(lambda s: len(s["binds"]) > binds_before and s["bound"] >= 1, timeout=15)
    assert all(b["ok"] for b in state["binds"][binds_before:])
    test_sms_binds_with_the_decrypted_password_and_sends(live)
    test_messenger_sends_with_the_page_token_and_checks_the_app_secret(live)
    message_uuid = live.send(viber("rest-2"))
    sent = live.viber.wait_for(lambda calls: any(c.json.get("text") == "rest-2" for c in calls))
    assert [c.headers["x-viber-auth-token"] for c in sent if c.json.get("text") == "rest-2"] == [VIBER_TOKEN]
    live.wait_status(message_uuid)
    live.send(messenger("psid-legacy-2", LEGACY_PAGE), auth=None, headers=live.server.bearer())
    found = live.graph.wait_for(lambda rs: any(r.body.get("recipient", {}).get("id") == "psid-legacy-2" for r in rs))
    assert [r.query["access_token"] for r in found if r.body.get("recipient", {}).get("id") == "psid-legacy-2"] == [LEGACY_TOKEN]


def test_no_secret_in_any_log_line_error_body_metric_or_get_answer(live: Live) -> None:
    # A link with a wrong password: its binds fail, and a message routed to it waits.
    wrong = live.request("POST", "/v1/channels", json={
        "kind": "sms", "channel": "sms", "name": "wrong",
        "config": {"host": "127.0.0.1", "port": live.smsc.port, "system_id": SYSTEM_ID, "password": WRONG_PASSWORD,
                   "prefixes": ["4479"]}})
    assert wrong.status_code == 201, wrong.text
    live.smsc.wait_for(lambda s: any(not b["ok"] for b in s["binds"]), timeout=15)
    stuck = live.send(sms("447912345678"))
    # Refused requests carrying secrets: invalid configs, a bad PATCH, wrong credentials.
    event = page_event(PAGE)
    refused = [
        live.request("POST", "/v1/channels", json={"kind": "messenger", "channel": "messenger", "name": "x",
                                                   "config": {"page_id": "1", "page_token": REFUSED_TOKEN}}),
        live.request("POST", "/v1/channels", json={"kind": "sms", "channel": "sms", "name": "x", "config": {
            "host": "127.0.0.1", "port": 1, "system_id": "x", "password": REFUSED_PASSWORD}}),
        live.request("PATCH", f"/v1/channels/{live.links['messenger']['id']}",
                     json={"config": {"page_token": REFUSED_TOKEN, "app_secret": 7}}),
        live.request("PATCH", f"/v1/channels/{live.links['sms']['id']}", json={"config": {"password": REFUSED_PASSWORD}}),
        live.request("GET", "/v1/channels", auth=(live.server.api_key, live.server.api_secret + "x")),
        live.request("POST", "/v1/messages", content=b'{"channel": "sms", ', headers={"content-type": "application/json"}),
        live.request("POST", "/inbound/messenger", content=event, headers=signed(event, "nope"),
                     auth=None),
    ]
    assert [r.status_code for r in refused] == [422, 422, 422, 422, 401, 400, 401]
    time.sleep(1.0)  # a few more bind attempts and retries
    views = live.request("GET", "/v1/channels").json()["_embedded"]["channels"]
    assert len(views) == 6
    for view in views:
        assert live.request("GET", f"/v1/channels/{view['id']}").status_code == 200
    live.request("GET", "/v1/messages")
    live.request("GET", f"/v1/messages/{stuck}")
    assert live.request("GET", "/metrics", auth=None).status_code == 200
    live.cli_json("channel", "list", "--json")

    logs = "".join(p.read_text() for p in live.data_dir.glob("server-*.log"))
    assert "bind" in logs.lower() and len(logs) > 1000  # the logs say something about the failing bind
    for secret in (*SECRETS, live.server.api_secret):
        assert secret not in logs, secret
        assert not [a for a in live.answers if secret in a], secret


# -- MISSIVE_SECRET_KEY ------------------------------------------------------------------------


def env_cli(data_dir: Path, key: str, *args: str, **extra: str) -> Any:
    return missive(data_dir, *args, env={"MISSIVE_SECRET_KEY": key, **extra})


def test_a_key_from_the_environment_encrypts_and_rotation_needs_the_new_key(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    assert env_cli(tmp_path, old, "account", "create").returncode == 0
    added = env_cli(tmp_path, old, "channel", "add", "viber", "--service-id", SERVICE, "--auth-token", VIBER_TOKEN, "--json")
    assert added.returncode == 0, added.stderr
    link_id = json.loads(added.stdout)["id"]
    assert sealed_id(stored(tmp_path)[link_id]["auth_token"]) == key_id(base64_key(old))
    assert not (tmp_path / KEY_FILE).exists()

    refused = env_cli(tmp_path, old, "secrets", "rotate")
    assert refused.returncode == 1 and "--new-key" in refused.stderr and "MISSIVE_SECRET_KEY" in refused.stderr
    rotated = env_cli(tmp_path, old, "secrets", "rotate", "--json", MISSIVE_NEW_SECRET_KEY=new)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"key_id": key_id(base64_key(new)), "links": 1, "values": 1, "from_plaintext": 0}
    assert "set MISSIVE_SECRET_KEY" in rotated.stderr and new not in rotated.stdout + rotated.stderr
    assert sealed_id(stored(tmp_path)[link_id]["auth_token"]) == key_id(base64_key(new))
    assert not (tmp_path / KEY_FILE).exists()

    async def read_with(key: str) -> list[dict[str, Any]]:
        engine = make_engine(settings_for(tmp_path, secret_key=key))
        try:
            return await list_links(engine, await account_id_for(engine, None))
        finally:
            await engine.dispose()

    [row] = asyncio.run(read_with(new))
    assert row["config"]["auth_token"] == VIBER_TOKEN
    [row] = asyncio.run(read_with(f"{new},{old}"))  # several keys: the first encrypts, all decrypt
    assert row["config"]["auth_token"] == VIBER_TOKEN
    with pytest.raises(SecretKeyError) as missing:
        asyncio.run(read_with(old))
    assert key_id(base64_key(new)) in str(missing.value) and VIBER_TOKEN not in str(missing.value)

    listed = env_cli(tmp_path, old, "channel", "list", "--json")
    assert listed.returncode != 0 and VIBER_TOKEN not in listed.stdout + listed.stderr
    assert env_cli(tmp_path, new, "channel", "list", "--json").returncode == 0


def test_a_malformed_key_is_refused_without_being_echoed(tmp_path: Path) -> None:
    for bad in ("not-a-key-3x4y5z", new_key()[:-8], f"{new_key()},short-one-9q8w"):
        result = env_cli(tmp_path, bad, "channel", "list")
        assert result.returncode != 0 and "urlsafe base64 of 32 bytes" in result.stderr
        assert not [part for part in bad.split(",") if part in result.stdout + result.stderr]


def base64_key(text: str) -> bytes:
    return parse_keys(text, "test")[0]

