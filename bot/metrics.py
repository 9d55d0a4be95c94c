"""What operators watch, in Prometheus' format: counters moved where things happen, and the
depths of the inbox and the outbox read from the database when /metrics is scraped (so they
are right whichever worker is asked). No label ever holds a person's id or words."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlmodel import col, func, select

from storage.db import Database
from storage.models import InboxEvent, OutboxMessage

REGISTRY = CollectorRegistry(auto_describe=True)

UPDATES_RECEIVED = Counter("saferoute_updates_received_total", "Updates stored in the inbox.", ["channel"], registry=REGISTRY)
UPDATES_HANDLED = Counter("saferoute_updates_handled_total", "Updates handled, by outcome (done, error, set_aside).",
                          ["channel", "outcome"], registry=REGISTRY)
# Fine enough between 50 and 300 ms to tell where an answer's time goes under load (bench.updates prints them).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5, 10)
HANDLING_SECONDS = Histogram("saferoute_update_handling_seconds", "Time to handle one update, its transaction included.",
                             ["channel"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
INBOX_STORE_SECONDS = Histogram("saferoute_inbox_store_seconds", "Time to store what one fetch brought (before it is confirmed to the "
                                "platform), the wait for the database's write lock included.", ["channel"], buckets=LATENCY_BUCKETS,
                                registry=REGISTRY)
SEND_SECONDS = Histogram("saferoute_send_seconds", "Time of one request to the platform (a message, a receipt, an edit).", ["channel"],
                         buckets=LATENCY_BUCKETS, registry=REGISTRY)
SENDS = Counter("saferoute_sends_total", "Outbox rows tried, by lane and outcome (sent, failed, unreachable, retry, later, moved).",
                ["channel", "lane", "outcome"], registry=REGISTRY)
RATE_LIMITED = Counter("saferoute_rate_limited_total", "429 answers (retry after).", ["channel"], registry=REGISTRY)
SEND_FAILURES = Counter("saferoute_send_failures_total", "Sends that failed or will be retried, by the kind of error.",
                        ["channel", "error"], registry=REGISTRY)
PARTNER_DELIVERIES = Counter("saferoute_partner_deliveries_total", "Case cards and case messages delivered to partners.",
                             ["channel"], registry=REGISTRY)
INBOX_DEPTH = Gauge("saferoute_inbox_updates", "Inbox rows by status (pending: waiting to be handled; failed: set aside).",
                    ["status"], registry=REGISTRY)
OUTBOX_DEPTH = Gauge("saferoute_outbox_rows", "Outbox rows waiting or being sent, by lane and status.", ["lane", "status"], registry=REGISTRY)
CAMPAIGN_ROWS = Gauge("saferoute_campaign_rows", "A campaign run's messages by status.", ["run", "status"], registry=REGISTRY)



async def render(db: Database) -> tuple[bytes, str]:
    """The metrics page, with the database's depths read now."""
    from bot.outbox import lane
    async with db.session() as session:
        inbox = dict((await session.exec(select(InboxEvent.status, func.count()).where(  # type: ignore[call-overload]
            col(InboxEvent.status).in_(["pending", "failed"])).group_by(InboxEvent.status))).all())
        outbox = (await session.exec(select(OutboxMessage.priority, OutboxMessage.status, func.count()).where(  # type: ignore[call-overload]
            col(OutboxMessage.status).in_(["pending", "sending", "held"])).group_by(OutboxMessage.priority, OutboxMessage.status))).all()
        runs = (await session.exec(select(OutboxMessage.batch, OutboxMessage.status, func.count()).where(  # type: ignore[call-overload]
            col(OutboxMessage.batch).like("run:%")).group_by(OutboxMessage.batch, OutboxMessage.status))).all()
    for status in ("pending", "failed"):
        INBOX_DEPTH.labels(status).set(inbox.get(status, 0))
    OUTBOX_DEPTH.clear()
    for priority, status, count in outbox:
        OUTBOX_DEPTH.labels(lane(priority), status).inc(count)
    CAMPAIGN_ROWS.clear()
    for batch, status, count in runs:
        CAMPAIGN_ROWS.labels(batch.split(":", 1)[1], status).set(count)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
