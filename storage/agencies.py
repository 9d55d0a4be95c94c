"""Tables of the recruitment-agency registry: agencies as published in official lists.

Every record keeps where it comes from (`source`, `source_url`, `source_date`), so that the
bot can say whose list it is and how old. Records are public data, so they are not
encrypted. `python -m bot agencies import FILE` fills the table (see bot/features/agencies).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel

from storage.models import utcnow

AGENCY_STATUSES = ("licensed", "suspended", "revoked", "blacklisted")


class Agency(SQLModel, table=True):
    """One agency as one official list gives it. The same agency may appear in two lists
    (a licence list and a blacklist); each record is shown with its own source."""

    __tablename__ = "agency"

    id: int | None = Field(default=None, primary_key=True)
    country: str = Field(max_length=2, index=True, description="Where the agency is licensed: KH, LA, MM, TH or VN.")
    licence_no: str | None = Field(default=None, max_length=64)
    name_latin: str | None = Field(default=None, max_length=255)
    name_native: str | None = Field(default=None, max_length=255, description="The name in the country's own script.")
    other_names: str | None = Field(default=None, max_length=1000, description="Other names or spellings, separated by |.")
    status: str = Field(max_length=16, description="licensed, suspended, revoked or blacklisted")
    licence_valid_from: date | None = None
    licence_valid_until: date | None = None
    address: str | None = Field(default=None, max_length=500)
    phone: str | None = Field(default=None, max_length=100)
    source: str = Field(max_length=500, description="Who published the list, and its title.")
    source_url: str | None = Field(default=None, max_length=500)
    source_date: date = Field(description="The date of the published list.")
    imported_at: datetime = Field(default_factory=utcnow)
