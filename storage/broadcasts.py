"""Tables of staff, subscribers and awareness campaigns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.models import utcnow


class StaffRole(SQLModel, table=True):
    __tablename__ = "staff_roles"
    __table_args__ = (UniqueConstraint("user_id", "role", name="uq_staff_roles_user_role"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    role: str = Field(max_length=16, description="admin, campaign or partner")
    granted_by: int | None = Field(default=None, description="users.id of the admin who granted it; null for settings")
    granted_at: datetime = Field(default_factory=utcnow)


class StaffInvite(SQLModel, table=True):
    """A one-time invite link: whoever opens it first gets the role."""

    __tablename__ = "staff_invites"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    created_by: int | None = Field(default=None, foreign_key="users.id", description="Empty once its author asked to be forgotten.")
    expires_at: datetime
    used_by: int | None = None
    used_at: datetime | None = None


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    label: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="After this the token is refused (set at creation).")


class AuditEntry(SQLModel, table=True):
    """Every staff action: who (users.id), what, on what; never message content."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    actor_id: int | None = Field(default=None, index=True)
    action: str = Field(max_length=64)
    target: str = Field(default="", max_length=128)
    at: datetime = Field(default_factory=utcnow)


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"

    user_id: int = Field(primary_key=True, foreign_key="users.id")
    active: bool = True
    topics: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    timezone: str = Field(default="Asia/Bangkok", max_length=64)
    origin: str | None = Field(default=None, max_length=8)
    asked_at: datetime = Field(default_factory=utcnow)
    changed_at: datetime = Field(default_factory=utcnow)


class Campaign(SQLModel, table=True):
    __tablename__ = "campaigns"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120)
    created_by: int | None = Field(default=None, foreign_key="users.id", description="Empty once its author asked to be forgotten.")
    texts: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    button: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    audience: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    schedule: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="scheduled", max_length=16, index=True, description="scheduled, running, paused, finished, cancelled")
    paid: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class CampaignRun(SQLModel, table=True):
    """One firing of a campaign for one schedule slot; the unique slot makes a recurring
    campaign fire at most once per slot, whatever the clock or the number of processes."""

    __tablename__ = "campaign_runs"
    __table_args__ = (UniqueConstraint("campaign_id", "slot", name="uq_campaign_runs_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaigns.id", index=True)
    slot: datetime
    status: str = Field(default="sending", max_length=16, description="queuing, sending, finished")
    recipients: int = 0
    queued_after: int = Field(default=0, description="The last user id whose row is queued, while queuing.")
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
