"""Webhook delivery of reports to partners: a versioned JSON body, signed with the
partner's secret (HMAC-SHA256), retried with exponential backoff for up to 24 hours, with
an idempotency key so that a partner receiving it twice can tell. See docs/webhook.md."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.outbox import Outbox, Rejected, RetryLater, Sender
from storage.models import OutboxMessage, utcnow

if TYPE_CHECKING:
    from bot.features.reports.partners import Partner, PartnerBook
    from bot.features.reports.routing import RouteDecision
    from storage.reports import Report

SCHEMA = "saferoute.report/1"
MAX_AGE = timedelta(hours=24)


def webhook_payload(report: Report, partner: Partner, decision: RouteDecision) -> dict[str, Any]:
    content = report.content or {}
    return {
        "schema": SCHEMA,
        "case": {
            "code": report.code,
            "category": report.category,
            "urgent": report.urgent,
            "country": report.country,
            "province": report.province,
            "place": content.get("place"),
            "location": content.get("location"),
            "affected": report.affected,
            "contact_mode": report.contact_mode,
            "phone": content.get("phone"),
            "language": report.lang,
            "description": content.get("description"),
            "attachments": [{"kind": a["kind"]} for a in content.get("attachments", [])],
            "screening_summary": content.get("screening_summary"),
            "received_at": report.created_at.isoformat(),
        },
        "routing": {"partner": partner.id, "kind": decision.kind, "reason": decision.reason},
    }


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """HMAC-SHA256 over "<timestamp>." and the raw body: a captured request cannot be
    replayed once the receiver's five-minute window has passed."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def idempotency_key(row: OutboxMessage) -> str:
    return f"saferoute-delivery-{row.id}"


class WebhookDelivery:
    def __init__(self, book: PartnerBook, outbox: Outbox, *, backoff_base: float = 30.0, timeout: float = 15.0) -> None:
        self.book = book
        self.backoff_base = backoff_base
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.sender = Sender(outbox, "webhook", self.deliver, max_attempts=None, max_age=MAX_AGE)

    async def deliver(self, row: OutboxMessage, payload: dict[str, Any]) -> str | None:
        partner = self.book.partners.get(row.chat)
        if partner is None or not partner.webhook_url:
            raise Rejected(f"partner {row.chat} has no webhook")
        secret = os.environ.get(partner.webhook_secret_env or "", "")
        if not secret:
            raise RetryLater(self._backoff(row))  # configuration missing: keep trying until someone sets it
        body = json.dumps({**payload, "delivery_id": idempotency_key(row), "created_at": row.created_at.isoformat()},
                          ensure_ascii=False, sort_keys=True).encode()
        timestamp = int(utcnow().timestamp())
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key(row), "X-SafeRoute-Timestamp": str(timestamp),
                   "X-SafeRoute-Signature": sign(secret, body, timestamp), "X-SafeRoute-Schema": SCHEMA}
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as http, http.post(partner.webhook_url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    return str(resp.status)
                if resp.status in (400, 410, 422):
                    raise Rejected(f"webhook answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError):
            pass
        raise RetryLater(self._backoff(row))

    def _backoff(self, row: OutboxMessage) -> float:
        return min(self.backoff_base * 2 ** max(row.attempts - 1, 0), 3600.0)
