"""One run of `forecast notify send`: build each target's digest or alerts, render them for its
channel, and send each once (see `outbox`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from forecast.revenue.tree import COMPANY
from forecast.settings import Settings
from service.notify import outbox
from service.notify.alerts import Champions, alerts, champion_alerts
from service.notify.book import Book, Node, nodes_of, read_book
from service.notify.deliver import Delivery
from service.notify.digest import digest
from service.notify.message import Message
from service.notify.outbox import Target
from service.notify.render import slack_payload, teams_payload
from service.state import ModelMissingError, NotInTheDataError, ServiceConfig, ServiceState

What = Literal["digest", "alerts"]
Post = Callable[[str, dict[str, Any]], Delivery]
Result = Literal["sent", "already sent", "failed", "unknown", "would send"]


@dataclass(frozen=True)
class Outcome:
    target: Target
    message: Message | None  # None: a send a stopped run had recorded, made now
    result: Result
    detail: str = ""


def open_state(settings: Settings) -> ServiceState:
    """The service's state outside the server: the stored CRM and the champions, loaded (and
    checked) as the service loads them."""
    import os

    from service.keys import ensure_tables

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the CLI's own bar
    state = ServiceState(settings, ServiceConfig())
    ensure_tables(state.engine)
    state.load_store()
    state.load_models()
    return state


def payload_for(channel: str, message: Message) -> dict[str, Any]:
    return slack_payload(message) if channel == "slack" else teams_payload(message)


def messages(
    book: Book | None,
    node: Node,
    what: What,
    settings: Settings,
    champions: tuple[Champions, dict[str, str | None]],
) -> list[Message]:
    """The digest, or the alerts, of one node (champion alerts: to the company's channels,
    even when no deal-win champion serves and nothing else can be said)."""
    if what == "digest":
        return [] if book is None else [digest(book, node, min_others=settings.coaching_min_others)]
    found = [] if book is None else alerts(book, node, settings)
    if node.level == COMPANY:
        found += champion_alerts(champions[0], node, champions[1])
    return found


def run(
    state: ServiceState,
    what: What,
    post: Post,
    *,
    dry_run: bool = False,
    only: str | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> Iterator[Outcome]:
    """Every target's messages (only the targets of node `only`, when given), each sent once;
    a dry run sends and records nothing. Sends a stopped run had recorded go first.

    Raises:
        ModelMissingError: a digest, with no deal-win champion to forecast with.
    """
    engine = state.engine
    if not dry_run:
        yield from resend_waiting(engine, post)
    targets = [t for t in outbox.targets(engine) if only is None or t.node == only]
    if not targets:  # nothing to build the book for
        return
    champions = Champions.of(state)
    last_seen = {name: outbox.seen(engine, f"champion:{name}") for name in champions.serving}
    book = _book(state, what, step)
    nodes = {(n.level, n.name): n for n in nodes_of(state.reps())}
    for target in targets:
        node = nodes.get((target.level, target.node))
        if node is None:
            yield Outcome(target, None, "failed", f"no {target.level} {target.node!r} in the CRM")
            continue
        for message in messages(book, node, what, state.settings, (champions, last_seen)):
            if dry_run:
                yield Outcome(target, message, "would send")
                continue
            key, payload = (
                outbox.send_key(message.key, target),
                payload_for(target.channel, message),
            )
            sent = send_once(engine, target, key, message.kind, payload, post)
            yield Outcome(target, message, *sent)
    if what == "alerts" and not dry_run:
        for name, version in champions.serving.items():
            if version is not None:
                outbox.remember(engine, f"champion:{name}", version)


def _book(state: ServiceState, what: What, step: Callable[[str], None]) -> Book | None:
    """The run's book; None for alerts when no deal-win champion serves (the champion alerts
    still go: they say why)."""
    try:
        return read_book(state, step)
    except (ModelMissingError, NotInTheDataError):
        if what == "digest":
            raise
        return None


def send_once(
    engine: sa.Engine, target: Target, key: str, kind: str, payload: dict, post: Post
) -> tuple[Result, str]:
    """Record, then send: never twice (see `outbox`)."""
    state = outbox.record(engine, key, target, kind, payload)
    if state == "sent":
        return "already sent", ""
    if state == "sending":
        return "unknown", "a run stopped while sending it: not sent again"
    return _claimed_send(engine, target, key, payload, post)


def _claimed_send(
    engine: sa.Engine, target: Target, key: str, payload: dict, post: Post
) -> tuple[Result, str]:
    if not outbox.claim(engine, key):
        return "already sent", "another run is sending it"
    delivery = post(target.url, payload)
    tries = f"{delivery.attempts} {'try' if delivery.attempts == 1 else 'tries'}"
    answer = f"HTTP {delivery.status}" if delivery.status else delivery.detail
    detail = f"{answer}, {tries}" + (
        f": {delivery.detail}" if delivery.status and not delivery.ok else ""
    )
    outbox.settle(engine, key, sent=delivery.ok, detail=detail[:300])
    return ("sent" if delivery.ok else "failed"), detail


def resend_waiting(engine: sa.Engine, post: Post) -> Iterator[Outcome]:
    """The sends a stopped run recorded and never made."""
    by_id = {t.id: t for t in outbox.targets(engine)}
    for key, target_id, payload in outbox.waiting(engine):
        target = by_id.get(target_id)
        if target is None:  # removed since: nowhere to send it
            outbox.settle(engine, key, sent=False, detail="the target was removed")
            continue
        yield Outcome(target, None, *_claimed_send(engine, target, key, payload, post))
