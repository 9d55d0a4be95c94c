"""The agency registry file: reading and validating a CSV of agencies, and importing it.

One row is one agency as an official list gives it. Every rejected row is reported with
its line number and every reason, and nothing is imported while any row is rejected, so
that a typo never silently drops an agency from the registry.

Import replaces, for each (country, source) pair in the file, the records that came from
that same list before; records from other lists stay. A new edition of a ministry's list
therefore replaces the old one, and a blacklist from another publisher is kept beside it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import select

from bot.engine.matching import fold
from bot.engine.yamlfile import Problem
from storage.agencies import AGENCY_STATUSES, Agency
from storage.db import Database

COLUMNS = ("country", "licence_no", "name_latin", "name_native", "other_names", "status", "licence_valid_from",
           "licence_valid_until", "address", "phone", "source", "source_url", "source_date")
REQUIRED_COLUMNS = ("country", "status", "source", "source_date")
COUNTRIES = ("KH", "LA", "MM", "TH", "VN")
NEEDS_LICENCE = ("licensed", "suspended")
# The script each country's own names are written in (Vietnamese is Latin with marks).
NATIVE_SCRIPT = {"KH": ("Khmer", ((0x1780, 0x17FF), (0x19E0, 0x19FF))), "LA": ("Lao", ((0x0E80, 0x0EFF),)),
                 "TH": ("Thai", ((0x0E00, 0x0E7F),)), "MM": ("Myanmar", ((0x1000, 0x109F), (0xAA60, 0xAA7F), (0xA9E0, 0xA9FF)))}
MAX_LENGTHS = {"licence_no": 64, "name_latin": 255, "name_native": 255, "other_names": 1000, "address": 500, "phone": 100,
               "source": 500, "source_url": 500}
PHONE = re.compile(r"^[0-9+()\-/.,; ]+$")
URL = re.compile(r"^https?://\S+$")


@dataclass
class Rejected:
    line: int
    reasons: list[str]

    def __str__(self) -> str:
        return f"line {self.line}: " + "; ".join(self.reasons)


@dataclass
class Parsed:
    path: Path
    records: list[Agency] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def problems(self) -> list[Problem]:
        return [Problem(self.path, r.line, "; ".join(r.reasons)) for r in self.rejected]


def _letters(text: str) -> list[str]:
    return [ch for ch in text if unicodedata.category(ch).startswith("L")]


def _is_latin(ch: str) -> bool:
    return ord(ch) <= 0x24F or 0x1E00 <= ord(ch) <= 0x1EFF


def _date(value: str, column: str, reasons: list[str]) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        reasons.append(f"{column} '{value}' is not a date (write YYYY-MM-DD)")
        return None


def _check_row(row: dict[str, str], today: dt.date) -> tuple[Agency | None, list[str]]:
    reasons: list[str] = []
    country = row["country"].upper()
    status = row["status"].lower()
    if country not in COUNTRIES:
        reasons.append(f"country '{row['country']}' is not one of {', '.join(COUNTRIES)}" if row["country"] else "country is empty")
    if status not in AGENCY_STATUSES:
        reasons.append(f"status '{row['status']}' is not one of {', '.join(AGENCY_STATUSES)}" if row["status"] else "status is empty")
    for name, limit in MAX_LENGTHS.items():
        if len(row[name]) > limit:
            reasons.append(f"{name} is longer than {limit} characters")
    if any(unicodedata.category(ch) == "Cc" for value in row.values() for ch in value):
        reasons.append("a field holds a control character")

    latin, native = row["name_latin"], row["name_native"]
    if not latin and not native:
        reasons.append("no name: give name_latin, name_native or both")
    if latin and not all(_is_latin(ch) for ch in _letters(latin)):
        reasons.append(f"name_latin '{latin}' has letters that are not Latin; put it in name_native")
    if native and country in NATIVE_SCRIPT:
        script, ranges = NATIVE_SCRIPT[country]
        letters = _letters(native)
        inside = sum(any(lo <= ord(ch) <= hi for lo, hi in ranges) for ch in letters)
        if letters and inside / len(letters) < 0.5:
            reasons.append(f"name_native '{native}' is not in {script} script")
    if native and country == "VN" and not all(_is_latin(ch) for ch in _letters(native)):
        reasons.append(f"name_native '{native}' is not Vietnamese (Latin letters with marks)")
    if row["other_names"] and any(not part.strip() for part in row["other_names"].split("|")):
        reasons.append("other_names has an empty name between | separators")

    licence = row["licence_no"]
    if status in NEEDS_LICENCE and not licence:
        reasons.append(f"licence_no is needed for a {status} agency")
    valid_from = _date(row["licence_valid_from"], "licence_valid_from", reasons)
    valid_until = _date(row["licence_valid_until"], "licence_valid_until", reasons)
    if valid_from and valid_until and valid_until < valid_from:
        reasons.append("licence_valid_until is before licence_valid_from")
    if row["phone"] and (not PHONE.match(row["phone"]) or not re.search(r"\d", row["phone"])):
        reasons.append(f"phone '{row['phone']}' may hold only digits, spaces and + - ( ) / . , ;")

    if not row["source"]:
        reasons.append("source is empty: every record needs the public list it comes from")
    if row["source_url"] and not URL.match(row["source_url"]):
        reasons.append(f"source_url '{row['source_url']}' is not an http(s) address")
    source_date = _date(row["source_date"], "source_date", reasons)
    if not row["source_date"]:
        reasons.append("source_date is empty: give the date of the published list")
    elif source_date and source_date > today:
        reasons.append(f"source_date {source_date} is in the future")
    if reasons:
        return None, reasons
    assert source_date is not None
    return Agency(
        country=country, licence_no=licence or None, name_latin=latin or None, name_native=native or None,
        other_names="|".join(p.strip() for p in row["other_names"].split("|")) if row["other_names"] else None,
        status=status, licence_valid_from=valid_from, licence_valid_until=valid_until, address=row["address"] or None,
        phone=row["phone"] or None, source=row["source"], source_url=row["source_url"] or None, source_date=source_date,
    ), []


def _identity(agency: Agency) -> tuple[str, str, str]:
    key = re.sub(r"[\W_]+", "", fold(agency.licence_no)) if agency.licence_no else fold(agency.name_latin or agency.name_native or "")
    return agency.country, agency.source, key


def read_agencies(path: Path, *, today: dt.date | None = None) -> Parsed:
    """Read and validate a registry CSV (UTF-8, with a header row); never raises on bad content."""
    parsed = Parsed(path)
    today = today or dt.date.today()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        parsed.rejected.append(Rejected(0, [f"cannot read the file: {exc.strerror or exc}"]))
        return parsed
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        parsed.rejected.append(Rejected(line, ["not UTF-8 text: save the file as CSV UTF-8"]))
        return parsed
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        parsed.rejected.append(Rejected(1, [f"the header row is not valid CSV: {exc}"]))
        return parsed
    if header is None:
        parsed.rejected.append(Rejected(1, ["the file is empty: it needs at least the header row"]))
        return parsed
    header = [h.strip().lower() for h in header]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    duplicated = [h for h, n in Counter(header).items() if n > 1]
    if unknown or missing or duplicated or not ({"name_latin", "name_native"} & set(header)):
        reasons = [f"unknown column '{h}'" for h in unknown] + [f"missing column '{c}'" for c in missing]
        reasons += [f"column '{h}' appears twice" for h in duplicated]
        if not {"name_latin", "name_native"} & set(header):
            reasons.append("no name column: add name_latin, name_native or both")
        parsed.rejected.append(Rejected(1, reasons + [f"(known columns: {', '.join(COLUMNS)})"]))
        return parsed

    seen: dict[tuple[str, str, str], int] = {}
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            parsed.rejected.append(Rejected(start, [f"not valid CSV: {exc}"]))
            break
        last_line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            parsed.rejected.append(Rejected(start, [f"has {len(fields)} fields, the header has {len(header)}"]))
            continue
        row = {c: "" for c in COLUMNS} | {h: v.strip() for h, v in zip(header, fields)}
        agency, reasons = _check_row(row, today)
        if agency is not None:
            key = _identity(agency)
            if key in seen:
                reasons = [f"the same agency from the same source is already on line {seen[key]}"]
                agency = None
            else:
                seen[key] = start
        if agency is None:
            parsed.rejected.append(Rejected(start, reasons))
        else:
            parsed.records.append(agency)
    return parsed


@dataclass
class ImportResult:
    parsed: Parsed
    imported: int = 0
    replaced: int = 0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.parsed.ok


async def import_records(db: Database, records: list[Agency]) -> tuple[int, int]:
    """Replace the records of each (country, source) list named in `records`; one transaction."""
    lists = sorted({(a.country, a.source) for a in records})
    replaced = 0
    async with db.transaction() as session:
        for country, source in lists:
            old = (await session.exec(select(Agency).where(Agency.country == country, Agency.source == source))).all()
            replaced += len(old)
            for agency in old:
                await session.delete(agency)
        await session.flush()
        for agency in records:
            session.add(Agency.model_validate(agency.model_dump(exclude={"id"})))
    return len(records), replaced


async def import_file(db: Database, path: Path, *, dry_run: bool = False, today: dt.date | None = None) -> ImportResult:
    """Validate a registry CSV and, if every row is valid (and not a dry run), import it."""
    parsed = read_agencies(path, today=today)
    result = ImportResult(parsed, dry_run=dry_run)
    if parsed.ok and not dry_run and parsed.records:
        result.imported, result.replaced = await import_records(db, parsed.records)
    return result


async def summary(db: Database) -> list[tuple[str, str, dt.date, int]]:
    """(country, source, date of the list, number of agencies) for every list in the registry."""
    async with db.session() as session:
        rows = (await session.exec(select(Agency.country, Agency.source, Agency.source_date))).all()
    counts = Counter((c, s, d) for c, s, d in rows)
    return [(c, s, d, n) for (c, s, d), n in sorted(counts.items())]
