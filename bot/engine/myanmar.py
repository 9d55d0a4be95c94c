"""Burmese typed in the Zawgyi encoding, read as Unicode.

Many phones in Myanmar still type Burmese with the Zawgyi font: text that looks right to its
writer is other code points to a program, so nothing would match and what is stored would be
unreadable on a Unicode phone. Every incoming text with Myanmar letters is checked with
Google's detector (myanmartools, its model shipped in the package) and, when it is Zawgyi,
converted with ICU's Zawgyi-my transliterator before it is matched or stored. The bot itself
only ever writes Unicode.
"""

from __future__ import annotations

from functools import lru_cache

import icu
from myanmartools import ZawgyiDetector

from bot.engine.events import Event

# The detector's probability; it is near 0 or near 1 for all but the shortest strings.
ZAWGYI_AT = 0.95


def has_myanmar(text: str) -> bool:
    return any("\u1000" <= ch <= "\u109f" for ch in text)


@lru_cache(maxsize=1)
def _detector() -> ZawgyiDetector:
    return ZawgyiDetector()


@lru_cache(maxsize=1)
def _converter() -> icu.Transliterator:
    return icu.Transliterator.createInstance("Zawgyi-my")


def is_zawgyi(text: str) -> bool:
    return has_myanmar(text) and _detector().get_zawgyi_probability(text) >= ZAWGYI_AT


def read_as_unicode(event: Event) -> None:
    """An incoming event's words in Unicode, whoever sent them (a reporter, a caseworker in a
    partner's group); `event.zawgyi` says it was converted. Done once: converting is idempotent."""
    if event.text:
        event.text, converted = to_unicode(event.text)
        event.zawgyi = event.zawgyi or converted
    if event.args:
        event.args, _ = to_unicode(event.args)


def to_unicode(text: str) -> tuple[str, bool]:
    """The text in Unicode, and whether it had been Zawgyi."""
    if not is_zawgyi(text):
        return text, False
    return _converter().transliterate(text), True
