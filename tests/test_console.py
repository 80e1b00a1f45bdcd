"""The console in a real browser: Debian's chromium, driven by Playwright, against a real
`missive serve` (one server and one browser for the module; a fresh browser context, so
fresh cookies, for each test). Every page a test visits is also written as a screenshot
to tests/screenshots/<test>/ for a person to look at (git-ignored)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, missive_json, provisioned_server, query

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).parent / "screenshots"
# The sandbox's receipt comes late enough that the message page is open before it.
ENV = {"MISSIVE_SANDBOX_DELIVERED_AFTER": "3", "MISSIVE_SANDBOX_READ_AFTER": "3600",
       "MISSIVE_POLL_INTERVAL": "0.05"}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = provisioned_server(tmp_path_factory.mktemp("console"), env=ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[object]:
    # After the server: Playwright's sync API keeps an event loop running in this thread,
    # where the server's provisioning could no longer run its own.
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


class Visit:
    """A browser context of its own (cookies included) that screenshots what it shows."""

    def __init__(self, browser: object, server: Server, name: str, phone: bool = False) -> None:
        size = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
        self.context = browser.new_context(viewport=size, base_url=server.url)  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.server = server
        self.folder = SHOTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.shots = 0

    def shot(self, label: str) -> Path:
        self.shots += 1
        path = self.folder / f"{self.shots:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def sign_in(self, api_key: str, api_secret: str) -> None:
        self.page.goto("/console")
        expect(self.page).to_have_url(re.compile(r"/console/sign-in"))
        self.page.get_by_label("API key").fill(api_key)
        self.page.get_by_label("API secret").fill(api_secret)
        self.shot("sign-in")
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("heading", name="Overview")).to_be_visible()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: object, server: Server, request: pytest.FixtureRequest) -> Iterator[Visit]:
    opened = Visit(browser, server, request.node.name)
    yield opened
    opened.close()


def send_sms(server: Server, api_key: str, api_secret: str, to: str = "447700900123", **extra: object) -> str:
    body = {"channel": "sms", "message_type": "text", "to": to, "from": "Missive", "text": "Hello from the console test", **extra}
    answer = httpx.post(f"{server.url}/v1/messages", json=body, auth=(api_key, api_secret), timeout=30)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["message_uuid"])


def test_sign_in_send_and_watch_it_delivered(visit: Visit, server: Server) -> None:
    visit.sign_in(server.api_key, server.api_secret)
    page = visit.page
    page.goto("/console/messages")
    visit.shot("messages-before")
    uuid = send_sms(server, server.api_key, server.api_secret, client_ref="console-1")
    # The list follows new messages without a reload.
    row = page.locator("#message-rows tr", has_text="console-1")
    expect(row).to_be_visible(timeout=10_000)
    visit.shot("messages-live")
    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(f"/console/messages/{uuid}$"))
    status = page.locator("#status")
    assert status.inner_text() in ("accepted", "submitted")
    visit.shot("message-sent")
    expect(status).to_have_text("delivered", timeout=15_000)
    expect(page.locator(".timeline")).to_contain_text("delivered")
    expect(page.locator("pre.json")).to_contain_text("Hello from the console test")
    # Its provider log: whatever the dispatcher recorded for it, every entry readable.
    recorded = query(server.data_dir, "SELECT summary FROM provider_logs WHERE message_uuid = :u ORDER BY at, id", u=uuid)
    entries = page.locator("ol.log > li")
    if recorded:
        expect(entries).to_have_count(len(recorded))
        entries.first.locator("summary").click()
        expect(entries.first.locator("pre")).to_be_visible()
        expect(entries.first).to_contain_text(recorded[0][0])
    else:
        expect(page.get_by_text("No exchange with a provider is recorded")).to_be_visible()
    visit.shot("message-delivered")
    page.goto("/console")
    expect(page.locator("figure.chart")).to_have_count(1)
    expect(page.locator("figure.chart figcaption")).to_contain_text("sms")
    visit.shot("overview")
    # Reading works without JavaScript: the same page, scripts off, shows the status.
    plain = visit.context.browser.new_context(java_script_enabled=False, base_url=server.url)
    plain.add_cookies(visit.context.cookies())
    quiet = plain.new_page()
    quiet.goto(f"/console/messages/{uuid}")
    expect(quiet.locator("#status")).to_have_text("delivered")
    plain.close()


def test_add_change_and_remove_a_link(visit: Visit, server: Server) -> None:
    visit.sign_in(server.api_key, server.api_secret)
    page = visit.page
    page.goto("/console/channels")
    visit.shot("channels")
    # The API's own checks: a bad config is refused, naming the field.
    form = page.get_by_role("region", name="Add a link")
    form.get_by_label("Kind").select_option("sandbox")
    form.get_by_label("Channel", exact=True).select_option("sms")
    form.get_by_label("Name").fill("console sandbox")
    form.get_by_label("Config (JSON)").fill('{"delivered_after": -1}')
    form.get_by_role("button", name="Add link").click()
    expect(page.get_by_role("alert")).to_contain_text("config.delivered_after")
    visit.shot("link-refused")
    form.get_by_label("Config (JSON)").fill('{"delivered_after": 0.5}')
    form.get_by_label("Rate limit (messages per second, empty: none)").fill("25")
    form.get_by_role("button", name="Add link").click()
    expect(page.get_by_role("status")).to_have_text("The link was added.")
    expect(page.get_by_role("heading", name="Link “console sandbox”")).to_be_visible()
    link_id = page.url.rsplit("/", 1)[1].split("?")[0]
    visit.shot("link")
    assert query(server.data_dir, "SELECT name, tps FROM channel_links WHERE id = :i", i=link_id) == [("console sandbox", 25.0)]
    page.get_by_label("Name").fill("renamed sandbox")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("The link was changed.")
    page.goto("/console/channels")
    expect(page.get_by_role("link", name="renamed sandbox")).to_be_visible()
    visit.shot("channels-with-link")
    page.get_by_role("link", name="renamed sandbox").click()
    page.get_by_role("button", name="Remove this link").click()
    expect(page.get_by_role("status")).to_have_text("The link was removed.")
    expect(page.get_by_role("link", name="renamed sandbox")).to_have_count(0)
    assert query(server.data_dir, "SELECT count(*) FROM channel_links WHERE id = :i", i=link_id) == [(0,)]
    visit.shot("channels-after")


def test_an_application_shows_its_private_key_once(visit: Visit, server: Server) -> None:
    visit.sign_in(server.api_key, server.api_secret)
    page = visit.page
    page.goto("/console/channels")
    form = page.get_by_role("region", name="Applications")
    form.get_by_label("Name").fill("console app")
    form.get_by_role("button", name="Create application").click()
    expect(page.get_by_label("Private key")).to_have_value(re.compile("BEGIN PRIVATE KEY"))
    visit.shot("application-created")
    page.goto("/console/channels#applications")
    expect(page.get_by_role("cell", name="console app")).to_be_visible()
    expect(page.get_by_text("BEGIN PRIVATE KEY")).to_have_count(0)


def test_a_second_account_sees_nothing_of_the_first(browser: object, server: Server) -> None:
    uuid = send_sms(server, server.api_key, server.api_secret, client_ref="first-account")
    link = httpx.post(f"{server.url}/v1/channels", auth=server.basic, timeout=30,
                      json={"kind": "sandbox", "channel": "messenger", "name": "first's link"}).json()
    other = missive_json(server.data_dir, "account", "create")
    visit = Visit(browser, server, "test_a_second_account_sees_nothing_of_the_first", phone=True)
    try:
        visit.sign_in(other["api_key"], other["api_secret"])
        page = visit.page
        visit.shot("overview-empty")
        page.goto("/console/messages")
        expect(page.get_by_text("No messages match.")).to_be_visible()
        visit.shot("messages-empty")
        for path in (f"/console/messages/{uuid}", f"/console/channels/{link['id']}"):
            answer = page.goto(path)
            assert answer is not None and answer.status == 404
            expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        visit.shot("not-found")
        # Nor can it act on them: send again a webhook of the first's message, remove its link.
        token = page.locator("input[name=csrf]").first.get_attribute("value")
        refused = page.request.post(f"/console/channels/{link['id']}/remove", form={"csrf": token or ""})
        assert refused.status == 404
        page.goto("/console/channels")
        expect(page.get_by_text("first's link")).to_have_count(0)
        visit.shot("channels-empty")
        page.goto(f"/console/messages?link={link['id']}")
        expect(page.get_by_text("No messages match.")).to_be_visible()
        # A filter with NUL (which PostgreSQL text cannot hold) is read without it.
        answer = page.goto("/console/messages?client_ref=first%00-account&to=%00")
        assert answer is not None and answer.status == 200
        expect(page.get_by_text("No messages match.")).to_be_visible()
    finally:
        visit.close()
    assert query(server.data_dir, "SELECT count(*) FROM channel_links WHERE id = :i", i=link["id"]) == [(1,)]


def test_a_post_without_the_token_is_refused(visit: Visit, server: Server) -> None:
    link = httpx.post(f"{server.url}/v1/channels", auth=server.basic, timeout=30,
                      json={"kind": "sandbox", "channel": "viber_service", "name": "kept"}).json()
    visit.sign_in(server.api_key, server.api_secret)
    page = visit.page
    # The session cookie goes with it (as from a form on another site), the token does not.
    for form in ({}, {"csrf": "not-the-token"}):
        refused = page.request.post(f"/console/channels/{link['id']}/remove", form=form)
        assert refused.status == 403
        assert "Nothing was changed" in refused.text()
    assert query(server.data_dir, "SELECT count(*) FROM channel_links WHERE id = :i", i=link["id"]) == [(1,)]
    # The sign-in form has its own token too.
    answer = httpx.post(f"{server.url}/console/sign-in", data={"api_key": server.api_key, "api_secret": server.api_secret})
    assert answer.status_code == 403 and "missive_console=" not in answer.headers.get("set-cookie", "")


def test_the_session_cookie_and_sign_out(visit: Visit, server: Server) -> None:
    page = visit.page
    page.goto("/console/sign-in")
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_label("API secret").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Those credentials were not accepted.")
    visit.shot("refused")
    visit.sign_in(server.api_key, server.api_secret)
    cookie = next(c for c in visit.context.cookies() if c["name"] == "missive_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    # Twelve hours by default.
    assert 12 * 3600 - 60 < cookie["expires"] - time.time() <= 12 * 3600
    # A cookie altered by hand is no session.
    forged = dict(cookie, value=cookie["value"][:-2] + ("AA" if not cookie["value"].endswith("AA") else "BB"))
    other = visit.context.browser.new_context(base_url=server.url)
    other.add_cookies([forged])
    probe = other.new_page()
    probe.goto("/console/messages")
    expect(probe).to_have_url(re.compile(r"/console/sign-in\?next=/console/messages"))
    other.close()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    visit.shot("signed-out")
    assert not [c for c in visit.context.cookies() if c["name"] == "missive_console"]
    page.goto("/console/channels")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
