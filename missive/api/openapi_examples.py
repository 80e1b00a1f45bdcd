"""Request examples of the OpenAPI document: shown by /docs, and sent by the fuzzer's
examples phase (tests/test_fuzz.py), so each one must be accepted as it stands."""

from __future__ import annotations

from typing import Any

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme",
       "text": "Hello from Missive", "client_ref": "order-1234"}
MESSENGER = {"channel": "messenger", "message_type": "text", "to": "USER_PSID", "from": "PAGE_ID",
             "text": "Your ticket changed", "messenger": {"category": "message_tag", "tag": "ticket_update"}}
VIBER = {"channel": "viber_service", "message_type": "image", "to": "447700900000", "from": "SERVICE_ID",
         "image": {"url": "https://example.com/receipt.png"}, "viber_service": {"category": "transaction", "ttl": 600}}
FAILOVER = {**MESSENGER, "failover": [SMS]}
BETA_SMS = {"from": {"type": "sms", "number": "447700900001"}, "to": {"type": "sms", "number": "447700900000"},
            "message": {"content": {"type": "text", "text": "This is an SMS sent from the Messages API"}}}
WORKFLOW = {"template": "failover", "workflow": [
    {"from": {"type": "messenger", "id": "PAGE_ID"}, "to": {"type": "messenger", "id": "USER_ID"},
     "message": {"content": {"type": "text", "text": "Your code is 1234"}},
     "failover": {"expiry_time": 600, "condition_status": "read"}},
    {"from": {"type": "sms", "number": "Acme"}, "to": {"type": "sms", "number": "447700900000"},
     "message": {"content": {"type": "text", "text": "Your code is 1234"}}},
]}
SANDBOX = {"channel": "messenger", "from": "USER_PSID", "text": "hi"}

EXAMPLES: dict[tuple[str, str], dict[str, tuple[str, dict[str, Any]]]] = {
    ("/v1/messages", "post"): {
        "sms": ("SMS", SMS),
        "messenger": ("Facebook Messenger, with a message tag", MESSENGER),
        "viber": ("Viber Service Message, an image", VIBER),
        "failover": ("Messenger, then SMS if it is rejected or undeliverable", FAILOVER),
    },
    ("/v0.1/messages", "post"): {"sms": ("SMS in the beta format", BETA_SMS)},
    ("/beta/messages", "post"): {"sms": ("SMS in the beta format", BETA_SMS)},
    ("/v0.1/dispatch", "post"): {"failover": ("Messenger until read, else SMS after 10 minutes", WORKFLOW)},
    ("/beta/workflows", "post"): {"failover": ("Messenger until read, else SMS after 10 minutes", WORKFLOW)},
    ("/v1/sandbox/inbound", "post"): {"text": ("A user writes to the page", SANDBOX)},
}


def add_request_examples(paths: dict[str, Any]) -> None:
    for (path, method), examples in EXAMPLES.items():
        media = paths[path][method]["requestBody"]["content"]["application/json"]
        # Aliases of one operation share their request body: give each its own copy.
        paths[path][method]["requestBody"] = {**paths[path][method]["requestBody"], "content": {
            "application/json": {**media, "examples": {
                name: {"summary": summary, "value": value} for name, (summary, value) in examples.items()}}}}
