"""The shapes of Missive's answers in /openapi.json: problems, the 202, messages read back,
applications and channel links, as JSON Schema (the requests' come from their pydantic
models, in openapi.py)."""

from __future__ import annotations

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "invalid_parameters": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "reason"],
                "properties": {"name": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}

ACCEPTED = {
    "type": "object",
    "required": ["message_uuid"],
    "properties": {
        "message_uuid": {"type": "string", "format": "uuid"},
        "workflow_id": {"type": "string", "format": "uuid", "description": "When `failover` was given."},
    },
}

HISTORY_ENTRY = {
    "type": "object",
    "required": ["status", "timestamp"],
    "properties": {
        "status": {"type": "string"},
        "timestamp": {"type": "string"},
        "provider_ref": {"type": "string"},
        "error": {"type": "object", "properties": {"code": {"type": "integer"}, "reason": {"type": ["string", "null"]}}},
    },
}

MESSAGE = {
    "type": "object",
    "required": ["message_uuid", "channel", "message_type", "to", "from", "status", "timestamp"],
    "properties": {
        "message_uuid": {"type": "string"},
        "channel": {"type": "string"},
        "message_type": {"type": "string"},
        "to": {"type": "string"},
        "from": {"type": "string"},
        "status": {"type": "string", "enum": ["accepted", "submitted", "delivered", "read", "rejected", "undeliverable"]},
        "timestamp": {"type": "string"},
        "updated_at": {"type": "string"},
        "client_ref": {"type": "string"},
        "webhook_url": {"type": "string"},
        "workflow_id": {"type": "string"},
        "application_id": {"type": "string"},
        "channel_link": {
            "type": "object",
            "description": "The link that carried (or refused) the message; `sandbox:<channel>` for the built-in sandbox. "
                           "Absent until a link took it.",
            "required": ["id", "kind"],
            "properties": {"id": {"type": "string"}, "kind": {"type": "string"}},
        },
        "content": {"type": "object"},
        "history": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}},
        "webhooks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "kind", "url", "state", "attempts"],
                "properties": {
                    "id": {"type": "string"},
                    "kind": {"type": "string"},
                    "url": {"type": "string"},
                    "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    "attempts": {"type": "integer"},
                    "status": {"type": ["string", "null"]},
                    "last_status_code": {"type": "integer"},
                    "last_error": {"type": "string"},
                    "delivered_at": {"type": "string"},
                },
            },
        },
    },
}

LINK = {"type": "object", "required": ["href"], "properties": {"href": {"type": "string"}}}

MESSAGE_PAGE = {
    "type": "object",
    "required": ["page_size", "_embedded", "_links"],
    "properties": {
        "page_size": {"type": "integer"},
        "_embedded": {
            "type": "object",
            "properties": {"messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}}},
        },
        "_links": {"type": "object", "properties": {"self": LINK, "next": LINK}},
    },
}

APPLICATION = {
    "type": "object",
    "required": ["id", "name", "keys", "capabilities"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "keys": {
            "type": "object",
            "properties": {"public_key": {"type": "string"}, "private_key": {"type": "string"}},
        },
        "capabilities": {"type": "object"},
        "privacy": {"type": "object"},
        "_links": {"type": "object"},
    },
}

CHANNEL_LINK = {
    "type": "object",
    "required": ["id", "kind", "channel", "name", "default", "config", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "channel": {"type": "string"},
        "name": {"type": "string"},
        "application_id": {"type": ["string", "null"]},
        "tps": {"type": ["number", "null"]},
        "default": {"type": "boolean"},
        "config": {"type": "object", "description": "The link's settings; credentials are never returned"},
        "created_at": {"type": "string"},
    },
}

APPLICATION_PAGE = {
    "type": "object",
    "required": ["page_size", "page", "total_items", "total_pages", "_embedded", "_links"],
    "properties": {
        "page_size": {"type": "integer"},
        "page": {"type": "integer"},
        "total_items": {"type": "integer"},
        "total_pages": {"type": "integer"},
        "_embedded": {
            "type": "object",
            "properties": {
                "applications": {"type": "array", "items": {"$ref": "#/components/schemas/Application"}}
            },
        },
        "_links": {"type": "object"},
    },
}
