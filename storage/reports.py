"""Tables of the report feature. What a reporter wrote is encrypted (see storage.crypto);
counts kept for research are anonymous and outlive the reports they count."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.crypto import EncryptedJSON, EncryptedText
from storage.models import utcnow


class Report(SQLModel, table=True):
    __tablename__ = "reports"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=12, unique=True, index=True)
    reporter_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    lang: str = Field(max_length=8)
    category: str = Field(max_length=32)
    urgent: bool = False
    country: str = Field(max_length=8)
    province: str | None = Field(default=None, max_length=64)
    affected: str = Field(max_length=16, description="me or someone else")
    contact_mode: str = Field(max_length=16, description="anytime, on_check, phone or none")
    content: dict[str, Any] | None = Field(default=None, sa_column=Column(EncryptedJSON, nullable=True))
    status: str = Field(default="open", max_length=16, index=True)
    outcome: str | None = Field(default=None, max_length=32)
    partner_id: str | None = Field(default=None, max_length=64, description="The partner currently responsible.")
    ack_deadline: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    acknowledged_at: datetime | None = None
    closed_at: datetime | None = None


class ReportRoute(SQLModel, table=True):
    """Every routing decision, with its reason: who got the case and why."""

    __tablename__ = "report_routes"

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="reports.id", index=True)
    partner_id: str = Field(max_length=64)
    kind: str = Field(max_length=16, description="primary, fallback or escalation")
    reason: str = Field(max_length=500)
    created_at: datetime = Field(default_factory=utcnow)


class CasePost(SQLModel, table=True):
    """A message the bot posted about a case (its card, a relay) in a partner's chat, so
    that a caseworker's reply to it can be tied back to the case."""

    __tablename__ = "case_posts"

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="reports.id", index=True)
    partner_id: str = Field(max_length=64)
    outbox_id: int = Field(index=True)


class Caseworker(SQLModel, table=True):
    """How a partner's team sees one of its caseworkers on case cards: "caseworker 2", never a
    name or an id. `ref` is the keyed hash also kept in Report.claimed_by."""

    __tablename__ = "caseworkers"
    __table_args__ = (UniqueConstraint("partner_id", "ref", name="uq_caseworkers_partner_ref"),
                      UniqueConstraint("partner_id", "number", name="uq_caseworkers_partner_number"))

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=64)
    ref: str = Field(max_length=128)
    number: int


class PartnerToken(SQLModel, table=True):
    """A bearer token for one partner's case system: it reads that partner's cases, nothing else."""

    __tablename__ = "partner_tokens"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    partner_id: str = Field(max_length=64)
    label: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class FeedbackCount(SQLModel, table=True):
    """Whether the help was useful, as a reporter answered after their case closed: a count
    per partner and month, nothing about who or which case."""

    __tablename__ = "feedback_counts"
    __table_args__ = (UniqueConstraint("partner_id", "month", "answer", name="uq_feedback_counts"),)

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=64)
    month: str = Field(max_length=7)
    answer: str = Field(max_length=16)
    count: int = 0


class CaseMessage(SQLModel, table=True):
    """The relay thread between a partner and a reporter, without either identity."""

    __tablename__ = "case_messages"

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="reports.id", index=True)
    direction: str = Field(max_length=16, description="to_reporter or to_partner")
    body: str | None = Field(default=None, sa_column=Column(EncryptedText, nullable=True))
    status: str = Field(default="waiting", max_length=16, description="waiting (for /status), queued, read")
    created_at: datetime = Field(default_factory=utcnow)


class ReportCount(SQLModel, table=True):
    """Anonymous counts by month, country and category; kept when reports are purged."""

    __tablename__ = "report_counts"
    __table_args__ = (UniqueConstraint("month", "country", "category", "shared", name="uq_report_counts_cell"),)

    id: int | None = Field(default=None, primary_key=True)
    month: str = Field(max_length=7)
    country: str = Field(max_length=8)
    category: str = Field(max_length=32)
    shared: bool = Field(description="True when the reporter consented and the case went to a partner.")
    count: int = 0
