"""The agency check in a conversation: find the agency a person names, say what its status
means for them; when it is not in the registry, say what the law of that country says (only
solid facts, with their sources) and how to check."""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import select

from bot.engine.content import Content, Fact
from bot.engine.runner import Turn
from bot.engine.yamlfile import Problem, line_of, load_yaml
from bot.features.agencies.registry import COUNTRIES
from bot.features.agencies.search import Matcher
from storage.agencies import AGENCY_STATUSES, Agency

# Where the flow keeps the answers this action reads (flows/agency.yaml).
COUNTRY_VAR = "agency_country"
QUERY_VAR = "agency_query"
FOUND_STEP, NOT_FOUND_STEP, ASK_STEP = "found", "not_found", "ask_name"

# Every text key this feature's code says (check makes sure each exists in every language).
TEXT_KEYS = (
    "agency.too_short", "agency.found", "agency.found_advice", "agency.no_list", "agency.not_found", "agency.not_found_means",
    "agency.card.licence", "agency.card.valid", "agency.card.valid_from", "agency.card.valid_until", "agency.card.address",
    "agency.card.phone", "agency.status.expired", *(f"agency.status.{s}" for s in AGENCY_STATUSES),
)


@dataclass
class AgencyConfig:
    path: Path
    countries: dict[str, list[str]] = field(default_factory=dict)
    no_list: dict[str, list[str]] = field(default_factory=dict)
    generic_words: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)


def config_path(flows_dir: Path) -> Path:
    return flows_dir / "data" / "agencies.yaml"


def registry_path(flows_dir: Path) -> Path:
    return flows_dir / "data" / "agencies.csv"


def load_config(flows_dir: Path, content: Content | None = None) -> tuple[AgencyConfig, list[Problem]]:
    path = config_path(flows_dir)
    config, problems = AgencyConfig(path), []
    if not path.exists():
        return config, [Problem(path, 0, "missing: the agency check's countries and generic words")]
    data: Any = load_yaml(path) or {}
    countries = data.get("countries") or {}
    facts = {f.id: f for f in content.facts} if content else {}
    for code in COUNTRIES:
        if code not in countries:
            problems.append(Problem(path, line_of(data, "countries"), f"country {code} has no entry: say what to do when an agency is not found"))
    for code, node in countries.items():
        line = line_of(countries, code)
        config.lines[str(code)] = line
        if code not in COUNTRIES:
            problems.append(Problem(path, line, f"country '{code}' is not one of {', '.join(COUNTRIES)}"))
            continue
        node = node if isinstance(node, dict) else {}
        ids = [str(i) for i in node.get("facts") or []]
        no_list = [str(i) for i in node.get("no_list") or []]
        if not ids:
            problems.append(Problem(path, line, f"country {code}: list the facts to show when an agency is not found"))
        for key in node:
            if key not in ("facts", "no_list"):
                problems.append(Problem(path, line, f"country {code}: unknown key '{key}' (allowed: facts, no_list)"))
        for fid in no_list + ids:
            if content is not None and fid not in facts:
                problems.append(Problem(path, line, f"country {code}: fact '{fid}' is not in facts.yaml"))
            elif content is not None and not facts[fid].shown:
                problems.append(Problem(path, line, f"country {code}: fact '{fid}' is {facts[fid].status}, only solid facts may be shown"))
        config.countries[str(code)] = ids
        config.no_list[str(code)] = no_list
    words = data.get("generic_words") or []
    if not isinstance(words, list):
        problems.append(Problem(path, line_of(data, "generic_words"), "generic_words must be a list"))
        words = []
    config.generic_words = [str(w) for w in words]
    return config, problems


def say_facts(turn: Turn, facts: list[Fact]) -> None:
    for fact in facts:
        turn.say_html(f"• {turn.text(fact.text_key)}\n{turn.engine.source_line(turn, fact.sources)}")


def record_source(turn: Turn, agency: Agency) -> str:
    label = agency.source + (f", {agency.source_url}" if agency.source_url else "") + f" ({agency.source_date.isoformat()})"
    return f"<i>{turn.text('common.sources', sources=html.escape(label))}</i>"


def status_line(turn: Turn, agency: Agency, today: dt.date) -> str:
    if agency.status == "licensed" and agency.licence_valid_until and agency.licence_valid_until < today:
        return turn.text("agency.status.expired", date=agency.licence_valid_until.isoformat())
    return turn.text(f"agency.status.{agency.status}")


def card(turn: Turn, agency: Agency, today: dt.date) -> str:
    e = html.escape
    names = [n for n in (agency.name_latin, agency.name_native) if n]
    lines = [f"🏢 <b>{e(names[0])}</b>"] + [e(n) for n in names[1:]]
    lines.append(status_line(turn, agency, today))
    if agency.licence_no:
        lines.append(turn.text("agency.card.licence", number=e(agency.licence_no)))
    start, end = agency.licence_valid_from, agency.licence_valid_until
    if start and end:
        lines.append(turn.text("agency.card.valid", start=start.isoformat(), end=end.isoformat()))
    elif end:
        lines.append(turn.text("agency.card.valid_until", end=end.isoformat()))
    elif start:
        lines.append(turn.text("agency.card.valid_from", start=start.isoformat()))
    if agency.address:
        lines.append(turn.text("agency.card.address", address=e(agency.address)))
    if agency.phone:
        lines.append(turn.text("agency.card.phone", phone=e(agency.phone)))
    lines.append(record_source(turn, agency))
    return "\n".join(lines)


class AgencyLookup:
    """The `agencies.lookup` action."""

    def __init__(self, config: AgencyConfig, content: Content) -> None:
        self.config = config
        self.content = content
        self.matcher = Matcher(config.generic_words)

    def country_facts(self, country: str, *, has_list: bool) -> list[Fact]:
        facts = {f.id: f for f in self.content.facts if f.shown}
        ids = ([] if has_list else self.config.no_list.get(country, [])) + self.config.countries.get(country, [])
        return [facts[i] for i in ids if i in facts]

    async def __call__(self, turn: Turn) -> str | None:
        country = str(turn.values.get(COUNTRY_VAR) or "")
        query = str(turn.values.pop(QUERY_VAR, "") or "").strip()
        if not self.matcher.usable(query):
            turn.say("agency.too_short")
            return ASK_STEP
        country_name = turn.text(f"country.{country}") if turn.engine.texts.has(f"country.{country}") else country
        agencies = list((await turn.session.exec(select(Agency).where(Agency.country == country))).all())
        if not agencies:
            turn.say("agency.no_list", country=country_name)
            say_facts(turn, self.country_facts(country, has_list=False))
            return NOT_FOUND_STEP
        matches = self.matcher.search(query, agencies)
        if not matches:
            turn.say("agency.not_found", query=html.escape(query[:100]), country=country_name, count=len(agencies))
            turn.say("agency.not_found_means")
            say_facts(turn, self.country_facts(country, has_list=True))
            return NOT_FOUND_STEP
        today = dt.date.today()
        turn.say("agency.found")
        for agency, _score in matches:
            turn.say_html(card(turn, agency, today))
        turn.say("agency.found_advice")
        return FOUND_STEP
