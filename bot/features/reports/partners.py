"""Partner organisations as data (flows/data/partners.yaml), and their validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.engine.yamlfile import ContentError, Problem, line_of, load_yaml

CATEGORIES = ("trafficking", "recruitment_fraud", "documents_wages", "child", "missing", "scam_compound", "other")
ID = re.compile(r"^[a-z0-9_]{1,64}$")


@dataclass
class Partner:
    id: str
    name: str
    countries: list[str]
    provinces: dict[str, list[str]]
    categories: list[str]
    languages: list[str]
    office_hours: str
    timezone: str
    ack_urgent_minutes: int
    ack_normal_minutes: int
    fallback: bool = False
    console_language: str = "en"
    telegram_chat_id: int | None = None
    telegram_topic_id: int | None = None  # a forum group's topic for cases; unset: the General topic
    webhook_url: str | None = None
    webhook_secret_env: str | None = None
    line: int = 0

    def takes(self, category: str) -> bool:
        return "all" in self.categories or category in self.categories

    @property
    def group_channel(self) -> str:
        """The channel of the chat where the partner's team reads cases (its file names a
        Telegram group, `telegram_chat_id`; another platform's group would be another field)."""
        return "telegram"

    @property
    def group_address(self) -> str:
        return str(self.telegram_chat_id)

    def ack_minutes(self, urgent: bool) -> int:
        return self.ack_urgent_minutes if urgent else self.ack_normal_minutes


@dataclass
class PartnerBook:
    partners: dict[str, Partner]
    hotline_only: list[str]
    path: Path
    by_chat: dict[int, Partner] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_chat = {p.telegram_chat_id: p for p in self.partners.values() if p.telegram_chat_id is not None}


def load_partners(path: Path) -> PartnerBook:
    problems: list[Problem] = []
    data = load_yaml(path) or {}
    partners: dict[str, Partner] = {}
    for node in data.get("partners") or []:
        line = line_of(node)
        pid = str(node.get("id", ""))

        def bad(message: str) -> None:
            problems.append(Problem(path, line, f"partner '{pid}': {message}"))

        if not ID.match(pid):
            bad("id must be 1-64 of a-z 0-9 _")
        if pid in partners:
            bad("defined twice")
        countries = [str(c) for c in node.get("countries") or []]
        if not countries:
            bad("needs countries")
        categories = [str(c) for c in node.get("categories") or []]
        for category in categories:
            if category != "all" and category not in CATEGORIES:
                bad(f"unknown category '{category}' (known: all, {', '.join(CATEGORIES)})")
        if not categories:
            bad("needs categories (or [all])")
        provinces = {str(k): [str(p) for p in v] for k, v in (node.get("provinces") or {}).items()}
        for country in provinces:
            if country not in countries:
                bad(f"provinces given for {country}, which is not in its countries")
        timezone = str(node.get("timezone", ""))
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            bad(f"timezone '{timezone}' is not an IANA time zone")
        ack = node.get("ack_minutes") or {}
        urgent, normal = int(ack.get("urgent", 30)), int(ack.get("normal", 1440))
        if urgent <= 0 or normal <= 0:
            bad("ack_minutes must be positive")
        chat_id = node.get("telegram_chat_id")
        if chat_id is not None and (not isinstance(chat_id, int) or chat_id >= 0):
            bad("telegram_chat_id must be a group's (negative) chat id")
        topic = node.get("telegram_topic_id")
        if topic is not None and (not isinstance(topic, int) or topic <= 0 or chat_id is None):
            bad("telegram_topic_id must be a topic's (positive) id in the partner's telegram_chat_id group")
        url = node.get("webhook_url")
        if url and not str(url).startswith(("https://", "http://127.0.0.1", "http://localhost")):
            bad("webhook_url must be https:// (plain http only for a local test receiver)")
        if url and not node.get("webhook_secret_env"):
            bad("a webhook needs webhook_secret_env, the environment variable holding its signing secret")
        if chat_id is None and not url:
            bad("needs a telegram_chat_id or a webhook_url: a partner nobody can reach would lose reports")
        partners[pid] = Partner(
            id=pid, name=str(node.get("name") or pid), countries=countries, provinces=provinces, categories=categories,
            languages=[str(x) for x in node.get("languages") or ["en"]], office_hours=str(node.get("office_hours") or ""),
            timezone=timezone, ack_urgent_minutes=urgent, ack_normal_minutes=normal, fallback=bool(node.get("fallback")),
            console_language=str(node.get("console_language") or "en"), telegram_chat_id=chat_id, telegram_topic_id=topic,
            webhook_url=str(url) if url else None, webhook_secret_env=node.get("webhook_secret_env"), line=line,
        )
    hotline_only = [str(c) for c in data.get("hotline_only") or []]
    if problems:
        raise ContentError(problems)
    return PartnerBook(partners, hotline_only, path)


def coverage_problems(book: PartnerBook, offered: dict[str, list[str]], flow_path: Path) -> list[Problem]:
    """Every country the report journey offers has a partner taking all categories, or is
    declared hotline-only; every province a partner names is one the journey offers."""
    problems = []
    for country, provinces in offered.items():
        covered = any(country in p.countries and "all" in p.categories for p in book.partners.values())
        if not covered and country not in book.hotline_only:
            problems.append(Problem(book.path, 0, f"country {country} is offered in {flow_path.name} but has no partner "
                                                  f"taking all categories and is not in hotline_only"))
    for partner in book.partners.values():
        for country, names in partner.provinces.items():
            for name in names:
                if name not in offered.get(country, []):
                    problems.append(Problem(book.path, partner.line, f"partner '{partner.id}': province '{name}' is not offered "
                                                                     f"for {country} in {flow_path.name}"))
    return problems
