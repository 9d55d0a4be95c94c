"""Facts, hotlines and their sources: the data behind what the bot states.

Every fact and number carries source ids (defined in `flows/sources.yaml`, copied from
the project's verified-facts file), a status and a "verified on" date. Only `solid`
entries are ever shown; `uncertain` ones stay in the data so that a partner can confirm
them by changing one word.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine.yamlfile import ContentError, Problem, line_of, load_yaml

STATUSES = {"solid", "uncertain"}
COUNTRY = re.compile(r"^[A-Z]{2}$")
KEY = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass
class Source:
    id: str
    publisher: str
    where: str
    date: str = ""
    name: str = ""   # the publisher in plain words, as a person is shown it
    url: str = ""

    @property
    def label(self) -> str:
        """Short enough for a phone screen: where to find it, else who published it; and when."""
        place = self.where if self.where and self.where != "–" else self.publisher
        return f"{place} ({self.date})" if self.date and self.date != "–" else place


@dataclass
class Fact:
    id: str
    topic: str
    status: str
    sources: list[str]
    verified_on: dt.date | None
    origin: list[str] = field(default_factory=list)
    destination: list[str] = field(default_factory=list)
    line: int = 0

    @property
    def text_key(self) -> str:
        return f"fact.{self.id}"

    @property
    def shown(self) -> bool:
        return self.status == "solid"

    def applies(self, origin: str | None, destination: str | None) -> bool:
        return (not self.origin or origin in self.origin) and (not self.destination or destination in self.destination)


@dataclass
class Hotline:
    country: str
    number: str
    status: str
    sources: list[str]
    verified_on: dt.date | None
    what: str | None = None
    emergency: bool = False
    note: str = ""
    kind: str = ""
    line: int = 0

    @property
    def shown(self) -> bool:
        return self.status == "solid"


HOTLINE_KINDS = {"police", "ambulance", "fire", "emergency", "tourist_police", "labour", "trafficking", "complaints",
                 "immigration", "child", "youth", "women"}


@dataclass
class Content:
    sources: dict[str, Source]
    facts: list[Fact]
    hotlines: dict[str, list[Hotline]]
    paths: dict[str, Path]

    def facts_for(self, topic: str, origin: str | None, destination: str | None) -> list[Fact]:
        return [f for f in self.facts if f.shown and f.topic == topic and f.applies(origin, destination)]

    def hotlines_for(self, country: str) -> list[Hotline]:
        return [h for h in self.hotlines.get(country, []) if h.shown]

    def has_route_facts(self, topic: str) -> bool:
        """Whether some route has facts of its own on this topic (so that a route without
        them is told it is reading what applies to everyone)."""
        return any(f.shown and f.topic == topic and (f.origin or f.destination) for f in self.facts)

    def checked_dates(self, source_ids: list[str]) -> list[dt.date | None]:
        wanted = set(source_ids)
        entries = [*self.facts, *(h for hs in self.hotlines.values() for h in hs)]
        return [e.verified_on for e in entries if e.shown and wanted & set(e.sources)]

    def text_keys(self) -> list[tuple[str, Path, int]]:
        keys = [(f.text_key, self.paths["facts"], f.line) for f in self.facts if f.shown]
        keys += [(h.what, self.paths["hotlines"], h.line) for hs in self.hotlines.values() for h in hs if h.shown and h.what]
        keys += [(f"hotline.kind.{h.kind}", self.paths["hotlines"], h.line) for hs in self.hotlines.values() for h in hs
                 if h.shown and h.kind]  # the label every number is shown with
        return keys


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def _check_entry(node: Any, path: Path, what: str, sources: dict[str, Source], problems: list[Problem]) -> tuple[str, list[str], dt.date | None]:
    line = line_of(node)
    status = str(node.get("status", ""))
    if status not in STATUSES:
        problems.append(Problem(path, line, f"{what}: status must be one of {sorted(STATUSES)}"))
    ids = [str(s) for s in node.get("sources") or []]
    if not ids:
        problems.append(Problem(path, line, f"{what}: no source; every fact needs source ids"))
    for sid in ids:
        if sid not in sources:
            problems.append(Problem(path, line, f"{what}: source '{sid}' is not in sources.yaml"))
    verified = _date(node.get("verified_on"))
    if verified is None:
        problems.append(Problem(path, line, f"{what}: verified_on must be a date (YYYY-MM-DD)"))
    return status, ids, verified


def load_content(directory: Path) -> Content:
    problems: list[Problem] = []
    paths = {name: directory / "data" / f"{name}.yaml" for name in ("sources", "facts", "hotlines")}
    for name, path in paths.items():
        if not path.exists():
            problems.append(Problem(path, 0, f"missing content file {path.name}"))
    if problems:
        raise ContentError(problems)

    sources: dict[str, Source] = {}
    data = load_yaml(paths["sources"]) or {}
    for sid, node in (data.get("sources") or {}).items():
        if not isinstance(node, dict) or not (node.get("publisher") or node.get("where")):
            problems.append(Problem(paths["sources"], line_of(data.get("sources"), sid), f"source '{sid}' needs a publisher or where"))
            continue
        sources[str(sid)] = Source(str(sid), str(node.get("publisher") or ""), str(node.get("where") or ""), str(node.get("date") or ""),
                                   str(node.get("name") or ""), str(node.get("url") or ""))
        if node.get("url") and not str(node["url"]).startswith("https://"):
            problems.append(Problem(paths["sources"], line_of(node), f"source '{sid}': url must start with https://"))

    facts: list[Fact] = []
    seen: set[str] = set()
    data = load_yaml(paths["facts"]) or {}
    for node in data.get("facts") or []:
        fid = str(node.get("id", ""))
        line = line_of(node)
        if not KEY.match(fid):
            problems.append(Problem(paths["facts"], line, f"fact id '{fid}' must be ASCII letters, digits, _ or ."))
        if fid in seen:
            problems.append(Problem(paths["facts"], line, f"fact '{fid}' is defined twice"))
        seen.add(fid)
        status, ids, verified = _check_entry(node, paths["facts"], f"fact '{fid}'", sources, problems)
        countries = [str(c) for c in (node.get("origin") or []) + (node.get("destination") or [])]
        for c in countries:
            if not COUNTRY.match(c):
                problems.append(Problem(paths["facts"], line, f"fact '{fid}': '{c}' is not a two-letter country code"))
        facts.append(Fact(fid, str(node.get("topic", "")), status, ids, verified,
                          [str(c) for c in node.get("origin") or []], [str(c) for c in node.get("destination") or []], line))

    hotlines: dict[str, list[Hotline]] = {}
    data = load_yaml(paths["hotlines"]) or {}
    for country, entries in (data.get("countries") or {}).items():
        if not COUNTRY.match(str(country)):
            problems.append(Problem(paths["hotlines"], line_of(data.get("countries"), country), f"'{country}' is not a two-letter country code"))
        for node in entries or []:
            number = str(node.get("number", ""))
            what = f"hotline {country} {number}"
            status, ids, verified = _check_entry(node, paths["hotlines"], what, sources, problems)
            if not re.search(r"\d", number):
                problems.append(Problem(paths["hotlines"], line_of(node), f"{what}: number has no digits"))
            if status == "solid" and not node.get("what"):
                problems.append(Problem(paths["hotlines"], line_of(node), f"{what}: a shown number needs a 'what' text key"))
            if node.get("kind") and node["kind"] not in HOTLINE_KINDS:
                problems.append(Problem(paths["hotlines"], line_of(node), f"{what}: kind must be one of {sorted(HOTLINE_KINDS)}"))
            if status == "solid" and not node.get("kind"):
                problems.append(Problem(paths["hotlines"], line_of(node), f"{what}: a shown number needs a 'kind' (what it is for, labelled on screen)"))
            hotlines.setdefault(str(country), []).append(
                Hotline(str(country), number, status, ids, verified, node.get("what"), bool(node.get("emergency")), str(node.get("note") or ""),
                        str(node.get("kind") or ""), line_of(node))
            )
    if problems:
        raise ContentError(problems)
    return Content(sources=sources, facts=facts, hotlines=hotlines, paths=paths)
