"""User-facing texts, read from gettext PO files in `locales/`.

The msgid is a stable key (`guide.ask_origin`), the msgstr the text. PO files are read
directly with Babel, so a fresh clone needs no compile step and a translator's edit is
live at the next start. A `fuzzy` entry is a drafted translation that no native speaker
has signed off: it is shown (better than English for the user) and counted as unreviewed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

LANGUAGES: tuple[str, ...] = ("km", "lo", "th", "vi", "en", "my")
SOURCE_LANGUAGE = "en"


PLACEHOLDER = re.compile(r"\{(\w+)\}")


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def fill(text: str, params: dict[str, object]) -> str:
    """Replace `{name}` with its value; unknown names stay as they are."""
    return PLACEHOLDER.sub(lambda m: str(params[m.group(1)]) if m.group(1) in params else m.group(0), text)


class MissingText(KeyError):
    """A text key exists in no locale: a content bug that `check` should have caught."""


@dataclass
class Locale:
    code: str
    path: Path
    texts: dict[str, str] = field(default_factory=dict)
    fuzzy: set[str] = field(default_factory=set)
    lines: dict[str, int] = field(default_factory=dict)
    catalog: Catalog | None = None


def load_locale(path: Path) -> Locale:
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=None, abort_invalid=False)
    loc = Locale(code=path.stem, path=path, catalog=catalog)
    for message in catalog:
        if not message.id or not isinstance(message.id, str):
            continue
        loc.lines[message.id] = message.lineno
        if message.string:
            loc.texts[message.id] = message.string
            if message.fuzzy:
                loc.fuzzy.add(message.id)
    return loc


class Translator:
    """Looks up texts by key and language, falling back to English, then to the key."""

    def __init__(self, locales: dict[str, Locale]) -> None:
        self.locales = locales

    @classmethod
    def from_dir(cls, directory: Path) -> Translator:
        locales = {p.stem: load_locale(p) for p in sorted(directory.glob("*.po"))}
        return cls(locales)

    @property
    def languages(self) -> list[str]:
        return [code for code in LANGUAGES if code in self.locales] + sorted(
            code for code in self.locales if code not in LANGUAGES
        )

    def has(self, key: str) -> bool:
        source = self.locales.get(SOURCE_LANGUAGE)
        return bool(source and key in source.texts)

    def get(self, lang: str | None, key: str, /, **params: object) -> str:
        for code in (lang, SOURCE_LANGUAGE):
            loc = self.locales.get(code or "")
            if loc and key in loc.texts:
                text = loc.texts[key]
                return fill(text, params) if params else text
        raise MissingText(key)


# Keys the code itself asks for (everything else is named in flow and content files).
CODE_KEYS: tuple[str, ...] = (
    "language.self_name",
    "common.unknown_command",
    "common.not_understood",
    "common.old_button",
    "common.choose",
    "common.sources",
    "common.verified_on",
    "common.error",
    "guide.no_facts",
    "hotlines.header",
    "hotlines.none_verified",
    "terminal.intro", "zawgyi.tip", "web.placeholder", "web.send", "web.quick_exit", "web.quick_exit_hint", "web.too_many",
    "common.attachment_received",
    "common.quick_exit",
    "quick_exit.cover",
    "report.emergency_header",
    "common.reask",
    "common.slow_down",
    "common.attachments_limit",
    "common.need_phone",
    "common.need_text",
    "common.offer",
    "common.continue",
    "common.continue_report",
    "common.nav_menu",
    "common.back",
    "common.did_you_mean",
    "card.more",
    "card.sources",
    "card.no_more",
    "card.no_sources",
    "card.sources_header",
    "card.checked",
    "guide.general_only",
    "hotlines.none_anywhere",
    *(f"intent.{name}" for name in ("greeting", "help", "language", "hotlines", "danger", "guidance", "agency", "job_offer",
                                    "scam_compound", "selfcheck", "report", "status", "forget", "subscribe", "unsubscribe")),
)
