"""Finding an agency by what a person types: a name in any script, with typos, Vietnamese
without its marks, or a licence number.

Names are folded (bot.engine.matching.fold: case, Vietnamese marks, invisible characters),
punctuation becomes space, and words every agency name shares ("company", "Co., Ltd",
"ក្រុមហ៊ុន", "บริษัท"…, listed in flows/data/agencies.yaml) are dropped, so that "Công ty ABC"
does not match every "Công ty". Khmer, Lao, Thai and Myanmar are written without spaces
between words, so for them all spacing is removed. rapidfuzz's scorers then compare each
name (see `_name_score`: plain, word-order-free and partial ratios, so that part of a name
or words in another order still match). Licence numbers are compared letters and digits
only: equal, or the same digits with another prefix; one digit off is another agency, so
there is no fuzzy licence match.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from rapidfuzz import fuzz

from bot.engine.matching import fold
from storage.agencies import Agency

MIN_SCORE = 78.0
PARTIAL_WEIGHT = 0.9  # a short query found inside a long name
NEAR_PARTIAL_WEIGHT = 0.95
LICENCE_DIGITS_SCORE = 95.0
CLOSE_TO_BEST = 12.0
_LATIN_LETTER = re.compile(r"[a-z]")
_NOT_ALNUM = re.compile(r"[\W_]+")


def _spaced(text: str) -> bool:
    """Latin-script text keeps its word spaces; the other scripts of the region do not use them."""
    return bool(_LATIN_LETTER.search(text))


class Matcher:
    def __init__(self, generic_words: Iterable[str] = ()) -> None:
        words = [self._base(w) for w in generic_words]
        self._latin_generic = [re.compile(rf"(?<!\w){re.escape(w)}(?!\w)") for w in words if w and _spaced(w)]
        self._other_generic = sorted({w.replace(" ", "") for w in words if w and not _spaced(w)}, key=len, reverse=True)

    @staticmethod
    def _base(text: str) -> str:
        """Folded, with punctuation and symbols as spaces (vowel signs and other marks stay)."""
        kept = (" " if unicodedata.category(ch)[0] in "PSZ" else ch for ch in fold(text))
        return " ".join("".join(kept).split())

    def normalise(self, text: str) -> str:
        """The form names and queries are compared in; empty if nothing specific is left."""
        base = self._base(text)
        for pattern in self._latin_generic:
            base = pattern.sub(" ", base)
        base = " ".join(base.split())
        if not _spaced(base):
            base = base.replace(" ", "")
        for word in self._other_generic:
            base = base.replace(word, "")
        return base if _spaced(base) else base.replace(" ", "")

    @staticmethod
    def licence_key(text: str) -> str:
        return _NOT_ALNUM.sub("", fold(text))

    @staticmethod
    def _digits(text: str) -> str:
        return "".join(ch for ch in text if ch.isdigit()).lstrip("0")

    def names(self, agency: Agency) -> list[str]:
        names = [agency.name_latin, agency.name_native, *(agency.other_names or "").split("|")]
        return [n for n in names if n and n.strip()]

    def score(self, query: str, agency: Agency) -> float:
        best = 0.0
        wanted = self.normalise(query)
        if wanted:
            for name in self.names(agency):
                candidate = self.normalise(name) or self._base(name)
                best = max(best, self._name_score(wanted, candidate))
        licence = self.licence_key(query)
        if agency.licence_no and any(ch.isdigit() for ch in licence):
            theirs = self.licence_key(agency.licence_no)
            if licence == theirs:
                best = 100.0
            elif self._digits(licence) and self._digits(licence) == self._digits(theirs) and set(licence) <= set(theirs):
                # the same number typed with another prefix or spacing ("001" for "KH-TEST-0001");
                # one digit off is another agency, so digits must agree exactly
                best = max(best, LICENCE_DIGITS_SCORE)
        return best

    @staticmethod
    def _name_score(wanted: str, candidate: str) -> float:
        """The best of: plain and word-order-free ratio; partial ratio (a part of the name,
        discounted); the same with spaces removed ("vidu" for "Ví Dụ"); and for Latin names
        plain ratio against each run of as many words as the query has ("moonlite" for
        "Moonlight"). Not token-set ratio: it calls "Hoa Bình" a match for "Hoa Sen"."""
        score = 0.0
        for mine, theirs in ((wanted, candidate), (wanted.replace(" ", ""), candidate.replace(" ", ""))):
            score = max(score, fuzz.ratio(mine, theirs), fuzz.token_sort_ratio(mine, theirs))
            if len(theirs) >= 1.5 * len(mine):
                score = max(score, PARTIAL_WEIGHT * fuzz.partial_ratio(mine, theirs))
            elif len(theirs) != len(mine):
                score = max(score, NEAR_PARTIAL_WEIGHT * fuzz.partial_ratio(mine, theirs))
        words, names = wanted.split(), candidate.split()
        if _spaced(wanted) and len(names) > len(words):
            runs = (" ".join(names[i:i + len(words)]) for i in range(len(names) - len(words) + 1))
            score = max(score, max(fuzz.ratio(wanted, run) for run in runs))
        return score

    def usable(self, query: str) -> bool:
        """Whether a query says enough to search with: a few letters beyond the generic words,
        or a licence number."""
        wanted = self.normalise(query)
        return len(wanted.replace(" ", "")) >= 2 or any(ch.isdigit() for ch in query)

    def search(self, query: str, agencies: Sequence[Agency], limit: int = 3) -> list[tuple[Agency, float]]:
        """The best matches, best first: at most `limit`, each scoring MIN_SCORE or more and
        close to the best one."""
        scored = sorted(((a, self.score(query, a)) for a in agencies), key=lambda pair: -pair[1])
        scored = [(a, s) for a, s in scored if s >= MIN_SCORE]
        if not scored:
            return []
        top = scored[0][1]
        return [(a, s) for a, s in scored if s >= top - CLOSE_TO_BEST][:limit]
