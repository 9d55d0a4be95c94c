"""Whether a campaign text is written in its language's script: English typed into the Lao
text would reach Lao subscribers as a message many cannot read. A warning, never a block
(a brand name or a link in Latin letters is fine in any language)."""

from __future__ import annotations

import unicodedata

import icu

# Each language's script (ISO 15924) and the code points it takes.
SCRIPTS = {"km": ("Khmr", (0x1780, 0x17FF), (0x19E0, 0x19FF)), "lo": ("Laoo", (0x0E80, 0x0EFF)), "th": ("Thai", (0x0E00, 0x0E7F)),
           "my": ("Mymr", (0x1000, 0x109F), (0xAA60, 0xAA7F)), "vi": ("Latn", (0x0041, 0x024F), (0x1E00, 0x1EFF)),
           "en": ("Latn", (0x0041, 0x024F))}
SHARE = 0.5


def script_name(lang: str, reader: str = "en") -> str | None:
    """The script's name in the reader's language (ICU's names: ឡាវ, ລາວ, Chữ Lào, Lao)."""
    found = SCRIPTS.get(lang)
    return str(icu.Locale(f"und-{found[0]}").getDisplayScript(icu.Locale(reader))) if found else None


def in_its_script(lang: str, text: str) -> bool:
    """At least half of the letters are in the language's script (no letters: nothing to say)."""
    found = SCRIPTS.get(lang)
    if found is None:
        return True
    ranges = found[1:]
    letters = [ch for ch in text if unicodedata.category(ch).startswith(("L", "M"))]
    if not letters:
        return True
    inside = sum(1 for ch in letters if any(lo <= ord(ch) <= hi for lo, hi in ranges))
    return inside / len(letters) >= SHARE


def script_warnings(texts: dict[str, str], reader: str = "en") -> list[tuple[str, str]]:
    """(language, expected script, named for the reader) for each text not written in its language's script."""
    return [(lang, script_name(lang, reader) or "") for lang, text in texts.items() if text and not in_its_script(lang, text)]
