"""A Slack and Teams webhook receiver on 127.0.0.1 for the tests: it checks every payload
against the parts of Slack's Block Kit reference and the Adaptive Card schema that our messages
use (written here from the published references: https://api.slack.com/reference/block-kit and
https://adaptivecards.io/schemas/adaptive-card.json, version 1.4), answers what a test scripts
(429 with Retry-After, 500, 404), and records what each channel received."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import jsonschema

SLACK_BLOCKS, SLACK_TEXT, SLACK_HEADER, SLACK_FIELD = 50, 3000, 150, 2000
TEAMS_BYTES = 28_000  # a Teams message's limit (about 28 KB)


def _text(kind: tuple[str, ...], limit: int) -> dict:
    return {
        "type": "object",
        "required": ["type", "text"],
        "properties": {
            "type": {"enum": list(kind)},
            "text": {"type": "string", "minLength": 1, "maxLength": limit},
            "emoji": {"type": "boolean"},
            "verbatim": {"type": "boolean"},
        },
        "additionalProperties": False,
    }


BLOCK_ID = {"type": "string", "maxLength": 255}
SLACK_SCHEMA = {
    "type": "object",
    "anyOf": [{"required": ["text"]}, {"required": ["blocks"]}],
    "properties": {
        "text": {"type": "string", "maxLength": 40_000},
        "blocks": {
            "type": "array",
            "maxItems": SLACK_BLOCKS,
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {
                            "type": {"const": "header"},
                            "text": _text(("plain_text",), SLACK_HEADER),
                            "block_id": BLOCK_ID,
                        },
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "required": ["type"],
                        "anyOf": [{"required": ["text"]}, {"required": ["fields"]}],
                        "properties": {
                            "type": {"const": "section"},
                            "text": _text(("plain_text", "mrkdwn"), SLACK_TEXT),
                            "fields": {
                                "type": "array",
                                "maxItems": 10,
                                "items": _text(("plain_text", "mrkdwn"), SLACK_FIELD),
                            },
                            "block_id": BLOCK_ID,
                        },
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "required": ["type", "elements"],
                        "properties": {
                            "type": {"const": "actions"},
                            "elements": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 25,
                                "items": {
                                    "type": "object",
                                    "required": ["type", "text"],
                                    "properties": {
                                        "type": {"const": "button"},
                                        "text": _text(("plain_text",), 75),
                                        "url": {"type": "string", "maxLength": 3000},
                                        "action_id": {"type": "string", "maxLength": 255},
                                        "value": {"type": "string", "maxLength": 2000},
                                        "style": {"enum": ["primary", "danger"]},
                                    },
                                    "additionalProperties": False,
                                },
                            },
                            "block_id": BLOCK_ID,
                        },
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"const": "divider"}, "block_id": BLOCK_ID},
                        "additionalProperties": False,
                    },
                ]
            },
        },
    },
}

SPACING = ["None", "Small", "Default", "Medium", "Large", "ExtraLarge", "Padding"]
CARD_ELEMENT = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "text"],
            "properties": {
                "type": {"const": "TextBlock"},
                "text": {"type": "string"},
                "wrap": {"type": "boolean"},
                "isSubtle": {"type": "boolean"},
                "size": {"enum": ["Default", "Small", "Medium", "Large", "ExtraLarge"]},
                "weight": {"enum": ["Default", "Lighter", "Bolder"]},
                "spacing": {"enum": SPACING},
                "separator": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["type", "facts"],
            "properties": {
                "type": {"const": "FactSet"},
                "facts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["title", "value"],
                        "properties": {"title": {"type": "string"}, "value": {"type": "string"}},
                        "additionalProperties": False,
                    },
                },
                "spacing": {"enum": SPACING},
            },
            "additionalProperties": False,
        },
    ]
}
TEAMS_SCHEMA = {
    "type": "object",
    "required": ["type", "attachments"],
    "properties": {
        "type": {"const": "message"},
        "attachments": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["contentType", "content"],
                "properties": {
                    "contentType": {"const": "application/vnd.microsoft.card.adaptive"},
                    "contentUrl": {"type": ["string", "null"]},
                    "content": {
                        "type": "object",
                        "required": ["type", "version"],
                        "properties": {
                            "$schema": {"type": "string"},
                            "type": {"const": "AdaptiveCard"},
                            "version": {"enum": ["1.0", "1.1", "1.2", "1.3", "1.4"]},
                            "body": {"type": "array", "items": CARD_ELEMENT},
                            "actions": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["type", "url"],
                                    "properties": {
                                        "type": {"const": "Action.OpenUrl"},
                                        "url": {"type": "string"},
                                        "title": {"type": "string"},
                                    },
                                    "additionalProperties": False,
                                },
                            },
                            "msteams": {"type": "object"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
        },
    },
}


def problems(channel: str, body: bytes) -> list[str]:
    """Why a payload would be refused by the channel (empty: none)."""
    try:
        payload = json.loads(body)
    except ValueError as err:
        return [f"not JSON: {err}"]
    schema = SLACK_SCHEMA if channel == "slack" else TEAMS_SCHEMA
    validator = jsonschema.Draft202012Validator(schema)
    found = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(payload)]
    if channel == "teams" and len(body) > TEAMS_BYTES:
        found.append(f"{len(body):,} bytes, over {TEAMS_BYTES:,}")
    return found


@dataclass
class Receiver:
    """What arrived: payloads accepted per path, every request's path, the problems found."""

    port: int = 0
    script: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    received: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    requests: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, channel: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.path(channel, name)}"

    @staticmethod
    def path(channel: str, name: str) -> str:
        return f"/{channel}/{quote(name)}"


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A running receiver; paths read /slack/<name> or /teams/<name>."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests.append(self.path)
                scripted = state.script.get(self.path, [])
                status = scripted.pop(0) if scripted else 200
            if status == 200:
                found = problems(self.path.split("/")[1], body)
                with state.lock:
                    if found:
                        state.refused += [(self.path, p) for p in found]
                    else:
                        state.received[self.path].append(json.loads(body))
                status = 400 if found else 200
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"invalid_payload or busy")

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


DEAL_ID = re.compile(r"\bD\d{7}\b")


def reach_of_head(state, node) -> frozenset[str]:
    """What the person heading `node` may see, by the API's own rule (`reach_of`)."""
    from service.deps import reach_of
    from service.keys import Principal

    assert node.head is not None, node
    role = state.reps().set_index("rep_id").at[node.head, "role"]
    principal = Principal("test", "rep" if role == "rep" else "manager", node.head)
    reach = reach_of(principal, state)
    assert reach is not None and node.members <= reach
    return reach


def violations(state, node, payload: dict) -> list[str]:
    """The deals a payload names that the node's head may not see."""
    owners = state.store().deals.set_index("deal_id")["rep_id"]
    reach = reach_of_head(state, node)
    named = set(DEAL_ID.findall(json.dumps(payload)))
    return sorted(d for d in named if owners.get(d) not in reach)
