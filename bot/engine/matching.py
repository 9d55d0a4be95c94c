"""Matching what people type against keywords, in any of the five languages.

Khmer, Lao and Thai are written without spaces between words, so a keyword is found
anywhere in the text, with all spacing removed. Vietnamese is often typed without
diacritics, so Latin letters are compared with their marks stripped; Khmer, Lao and
Thai vowel signs are combining marks too and must be kept, so only marks on Latin
letters are removed. Latin keywords must stand as whole words ("sos" not in "sosa").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def _is_latin(ch: str) -> bool:
    return ch < "\u0250"


def fold(text: str) -> str:
    """Case-fold, drop marks from Latin letters (and đ → d), drop invisible characters."""
    text = unicodedata.normalize("NFD", text.translate(_INVISIBLE)).casefold()
    out: list[str] = []
    for ch in text:
        if unicodedata.combining(ch) and out and _is_latin(out[-1]):
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out)).replace("đ", "d")


def _is_latin_word(keyword: str) -> bool:
    return all(_is_latin(ch) for ch in keyword)


Keyword = tuple[bool, str]  # whether it is Latin (matched as whole words), and its folded form


def contains_keyword(text: str, keyword: str) -> bool:
    return _found(_keyword_form(keyword), text)


def prepare_keyword(keyword: str) -> Keyword:
    """A keyword folded once, for `keyword_in` (code that checks a fixed list keeps these)."""
    return _keyword_form(keyword)


def keyword_in(form: Keyword, text: str) -> bool:
    return _found(form, text)


def part_of(part: str, text: str) -> bool:
    """Whether what someone typed stands in a text (a button's label), by the rules keywords
    follow; the typed side is not cached."""
    return _found(_form(part), text)


def _found(form: Keyword, text: str) -> bool:
    latin, kw = form
    if not kw:
        return False
    words, dense = _text_forms(text)
    if latin:  # whole words: both sides are words joined by single spaces
        return f" {kw} " in words
    return kw in dense


def _form(keyword: str) -> Keyword:
    folded = fold(keyword).strip()
    if _is_latin_word(folded):
        return True, " ".join(re.findall(r"\w+", folded))
    return False, _SPACE.sub("", folded)


# Keywords come from the content files, a fixed set: each is prepared once.
_keyword_form = lru_cache(maxsize=16384)(_form)


@lru_cache(maxsize=4)
def _text_forms(text: str) -> tuple[str, str]:
    """One text is checked against hundreds of keywords in a row; it is folded once. The
    cache is tiny on purpose: what people write is not kept around. The words are padded
    with a space each side, so a whole-word match is a substring test."""
    folded = fold(text)
    return f" {' '.join(_WORD.findall(folded))} ", _SPACE.sub("", folded)


def split_keywords(text: str) -> list[str]:
    """Keyword lists in the locale files are separated by `|`."""
    return [k.strip() for k in text.split("|") if k.strip()]


def first_match(text: str, candidates: Iterable[tuple[str, list[str]]]) -> str | None:
    """The first candidate id whose keywords occur in the text; longest keyword wins ties."""
    best: tuple[int, str] | None = None
    for cand_id, keywords in candidates:
        for kw in keywords:
            if contains_keyword(text, kw) and (best is None or len(kw) > best[0]):
                best = (len(kw), cand_id)
    return best[1] if best else None
