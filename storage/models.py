"""Tables of the conversation core: users, conversation state, inbox and outbox.

Telegram ids are 64-bit, and other channels use opaque strings, so a user's address on
a channel is kept as text; the channel adapter turns it back into the platform's type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.clock import utcnow  # re-exported: every module reads the time through it
from storage.crypto import EncryptedJSON, EncryptedText




class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_users_channel_address"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    address: str = Field(max_length=128, description="The user's id on the channel, as text.")
    lang: str | None = Field(default=None, max_length=8)
    reachable: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    """Where a user is in which flow. One row per user, so any process can continue it."""

    __tablename__ = "conversations"

    user_id: int = Field(primary_key=True, foreign_key="users.id")
    flow: str | None = Field(default=None, max_length=64)
    step: str | None = Field(default=None, max_length=64)
    vars: dict[str, Any] = Field(default_factory=dict, sa_column=Column(EncryptedJSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class InboxEvent(SQLModel, table=True):
    """An incoming platform event, stored before it is acted on.

    The unique (channel, event_key) makes a redelivered event a no-op; a row still
    `pending` after a crash is handled at the next start. The payload is cleared once
    handled, so user text does not linger here.
    """

    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("channel", "event_key", name="uq_inbox_channel_key"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    event_key: str = Field(max_length=64)
    chat: str = Field(max_length=128, index=True)
    payload: str | None = Field(default=None, sa_column=Column(EncryptedText, nullable=True))
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = Field(default=0)
    received_at: datetime = Field(default_factory=utcnow)
    handled_at: datetime | None = None
    error: str | None = Field(default=None, max_length=120, description="Why handling failed: the exception's type, never its text.")


class OutboxMessage(SQLModel, table=True):
    """Something to deliver on a channel: written in the same transaction as the state
    change that caused it, drained by the channel's sender."""

    __tablename__ = "outbox"
    # The senders' claim walks this in order and stops at its limit, so a reply is found at
    # once however many broadcast rows are queued behind it; with the chat in it, counting a
    # person's unsent replies (every update) reads no table rows.
    __table_args__ = (Index("ix_outbox_claim", "channel", "status", "priority", "id", "chat"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    chat: str = Field(max_length=128)
    kind: str = Field(max_length=32)
    payload: str | None = Field(default=None, sa_column=Column(EncryptedText, nullable=True))
    priority: int = Field(default=0, description="Lower goes first: 0 replies, 10 partner deliveries, 20 broadcasts.")
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = Field(default=0)
    not_before: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    result_ref: str | None = Field(default=None, max_length=64, description="Platform id of what was sent.")
    batch: str | None = Field(default=None, max_length=32, index=True, description="What the row belongs to, e.g. run:12 of a campaign.")
    claim_token: str | None = Field(default=None, max_length=32, description="Which claim holds the row; only it may record the outcome.")
    uncertain: bool = Field(default=False, description="An earlier attempt may have arrived (a crash mid-send, no answer): a repeat says so.")


class SendBudget(SQLModel, table=True):
    """Sends granted to the bot's workers in one second of the clock, so that between them
    they never pass the platform's limit (a worker takes a few at a time)."""

    __tablename__ = "send_budget"

    channel: str = Field(primary_key=True, max_length=32)
    second: int = Field(primary_key=True, sa_type=BigInteger)
    used: int = 0
    last_grant: int = 0


class Lease(SQLModel, table=True):
    """Something only one process may do at a time (firing schedules), held by whoever renewed
    it last, until it runs out; another process takes it over then."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime
