"""What people mean by what they type: intents, slots and answer words, without a model.

People write the way they talk: Khmer, Lao, Thai and Burmese without spaces, Vietnamese
with or without marks, loanwords in Latin script (passport, MOU, admin), typos and
stretched letters. No model can be downloaded at run time, so the bot understands with
example phrases per intent and language that an NGO edits (`flows/understanding/*.yaml`):

1. **Normalise**: NFC, invisible characters out, case folded, marks off Latin letters,
   spelling variants folded (Khmer coeng DA/TA, stretched letters), punctuation out.
2. **Split** with ICU's word breaker (PyICU) for scripts without spaces, and keep
   character n-grams too, since a segmenter misses new words and misspellings.
3. **Score** the text against every example by TF-IDF cosine and by how much of the
   example the text contains; an intent scores as its best example. A danger word wins
   over everything. Below the threshold the answer is `unknown`, with the runners-up
   offered as "did you mean" choices.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress
from pathlib import Path
from typing import Any

import icu

from bot.engine.matching import Keyword, contains_keyword, fold, keyword_in, prepare_keyword
from bot.engine.yamlfile import ContentError, Problem, line_of, load_yaml

INTENTS = ("greeting", "help", "language", "hotlines", "danger", "guidance", "agency", "job_offer", "scam_compound",
           "selfcheck", "report", "status", "forget", "subscribe", "unsubscribe")
UNKNOWN = "unknown"
ANSWERS = ("yes", "no", "not_sure", "back", "menu", "skip", "cancel", "done")
CATEGORIES = ("passport", "wages", "deception", "debt", "violence", "trafficking", "other")
COUNTRIES = ("KH", "LA", "MM", "TH", "VN", "MY", "KR", "JP", "TW", "SA")
DESTINATION_ONLY = {"MY", "KR", "JP", "TW", "SA"}
SCRIPT_LOCALES = (((0x0E00, 0x0E7F), "th"), ((0x0E80, 0x0EFF), "lo"), ((0x1780, 0x17FF), "km"), ((0x1000, 0x109F), "my"))
ANSWER_MAX_WORDS = 6

_PUNCT = re.compile(r"[^\w\s\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]+")
_STRETCH = re.compile(r"([^\W\d])\1{2,}")  # stretched letters ("helppp", "ช่วยยยย"); digits stay (1000)
_LATIN_DOUBLE = re.compile(r"([a-z])\1+")  # "hii", "cuuu" and "cứu" fold together (examples are folded the same way)
_SPACE = re.compile(r"\s+")
_VARIANTS = {
    "\u17d2\u178a": "\u17d2\u178f",  # Khmer coeng DA written for coeng TA (they look alike)
    "\u17c6\u17bb": "\u17bb\u17c6",  # Khmer NIKAHIT typed before vowel U on older keyboards (ខ្ញំុ for ខ្ញុំ)
    "\u0eab\u0e99": "\u0edc", "\u0eab\u0ea1": "\u0edd",  # Lao ຫນ, ຫມ: the older spellings of ໜ, ໝ
    "\u0ecd\u0eb2": "\u0eb3",  # Lao ໍາ typed for ຳ
}


def normalise(text: str) -> str:
    text = fold(unicodedata.normalize("NFC", text))
    for variant, canonical in _VARIANTS.items():
        text = text.replace(variant, canonical)
    text = _PUNCT.sub(" ", text)
    text = _LATIN_DOUBLE.sub(r"\1", _STRETCH.sub(r"\1", text))
    return _SPACE.sub(" ", text).strip()


@lru_cache(maxsize=16384)
def keyword_form(keyword: str) -> str:
    """A word from the content files, normalised once (they are a fixed set)."""
    return normalise(keyword)


def _script_locale(ch: str) -> str | None:
    code = ord(ch)
    for (lo, hi), loc in SCRIPT_LOCALES:
        if lo <= code <= hi:
            return loc
    return None


@lru_cache(maxsize=8)
def _breaker(locale: str) -> icu.BreakIterator:
    return icu.BreakIterator.createWordInstance(icu.Locale(locale))


def words(normalised: str) -> list[str]:
    """Words of a normalised text; runs in scripts without spaces are split by ICU."""
    out: list[str] = []
    for chunk in normalised.split():
        locale = next((loc for ch in chunk if (loc := _script_locale(ch))), None)
        if locale is None:
            out.append(chunk)
            continue
        breaker = _breaker(locale)
        breaker.setText(chunk)
        start = 0
        for end in breaker:
            piece = chunk[start:end].strip()
            if piece:
                out.append(piece)
            start = end
    return out


def features(normalised: str) -> Counter[str]:
    tokens = words(normalised)
    feats: Counter[str] = Counter(f"w:{t}" for t in tokens)
    feats.update(f"b:{a}_{b}" for a, b in zip(tokens, tokens[1:]))
    joined = f" {' '.join(tokens)} "
    feats.update(f"c:{joined[i:i + 3]}" for i in range(len(joined) - 2))
    dense = normalised.replace(" ", "")
    if any(_script_locale(ch) for ch in dense):
        feats.update(f"d:{dense[i:i + 2]}" for i in range(len(dense) - 1))
    return feats


def contains_word(text: str, keyword: str) -> bool:
    """A keyword in a text: whole words for Latin, anywhere (spaces ignored) otherwise."""
    return contains_keyword(normalise(text), normalise(keyword))


@dataclass
class Example:
    intent: str
    text: str
    weights: dict[str, float]
    norm: float


@dataclass
class Understanding:
    text: str
    intent: str
    score: float
    slots: dict[str, str] = field(default_factory=dict)
    runners_up: list[tuple[str, float]] = field(default_factory=list)
    danger_word: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "intent": self.intent, "slots": self.slots, "score": round(self.score, 3)}


@dataclass
class LanguageData:
    lang: str
    path: Path
    intents: dict[str, list[str]] = field(default_factory=dict)
    danger_words: list[str] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)
    countries: dict[str, list[str]] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    to_words: list[str] = field(default_factory=list)
    from_words: list[str] = field(default_factory=list)
    particles: list[str] = field(default_factory=list)


def _strings(node: Any) -> list[str]:
    if node is None:
        return []
    if isinstance(node, str):
        return [node]
    return [str(x) for x in node if str(x).strip()]


def load_language(path: Path, problems: list[Problem]) -> LanguageData:
    data = load_yaml(path) or {}
    lang = str(data.get("language") or path.stem)
    out = LanguageData(lang, path)
    for name, node in (data.get("intents") or {}).items():
        if name not in INTENTS:
            problems.append(Problem(path, line_of(data.get("intents"), name), f"unknown intent '{name}' (known: {', '.join(INTENTS)})"))
            continue
        out.intents[name] = _strings(node)
    out.danger_words = _strings(data.get("danger_words"))
    out.particles = _strings(data.get("particles"))
    for key, node in (data.get("answers") or {}).items():
        name = {True: "yes", False: "no"}.get(key, key) if isinstance(key, bool) else str(key)  # YAML reads yes/no as booleans
        if name not in ANSWERS:
            problems.append(Problem(path, line_of(data.get("answers"), key), f"unknown answer '{name}' (known: {', '.join(ANSWERS)})"))
            continue
        out.answers[name] = _strings(node)
    slots = data.get("slots") or {}
    for code, node in (slots.get("country") or {}).items():
        if code not in COUNTRIES:
            problems.append(Problem(path, line_of(slots.get("country"), code), f"unknown country '{code}' (known: {', '.join(COUNTRIES)})"))
            continue
        out.countries[str(code)] = _strings(node)
    for name, node in (slots.get("category") or {}).items():
        if name not in CATEGORIES:
            problems.append(Problem(path, line_of(slots.get("category"), name), f"unknown category '{name}' (known: {', '.join(CATEGORIES)})"))
            continue
        out.categories[str(name)] = _strings(node)
    out.to_words = _strings(slots.get("to"))
    out.from_words = _strings(slots.get("from"))
    return out


class Understander:
    """Intents, slots and answer words for every language, from the editable example files."""

    def __init__(self, languages: dict[str, LanguageData], threshold: float = 0.34, intent_flows: dict[str, str] | None = None,
                 report_categories: dict[str, str] | None = None) -> None:
        self.languages = languages
        self.threshold = threshold
        self.intent_flows = intent_flows or {}
        self.report_categories = report_categories or {}
        self._index: dict[str, tuple[list[Example], dict[str, float]]] = {}
        # per language: feature -> the examples that have it, with its weight in each and its square
        self._postings: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
        self._rarest: dict[str, float] = {}
        self._prepared: dict[tuple[str, str], list[tuple[str, str, Keyword]]] = {}

    @classmethod
    def from_dir(cls, directory: Path) -> Understander:
        problems: list[Problem] = []
        settings_path = directory / "intents.yaml"
        settings = load_yaml(settings_path) if settings_path.exists() else {}
        languages = {}
        for path in sorted(directory.glob("*.yaml")):
            if path.name == "intents.yaml":
                continue
            data = load_language(path, problems)
            languages[data.lang] = data
        flows = {str(k): str((v or {}).get("flow", "")) for k, v in ((settings or {}).get("intents") or {}).items()}
        for name in flows:
            if name not in INTENTS:
                problems.append(Problem(settings_path, line_of(settings.get("intents"), name), f"unknown intent '{name}'"))
        if problems:
            raise ContentError(problems)
        categories = {str(k): str(v) for k, v in ((settings or {}).get("report_categories") or {}).items()}
        return cls(languages, float((settings or {}).get("threshold", 0.34)), flows, categories)

    # -- the example index, per language (its own examples and English, which people mix in) --

    def _examples(self, lang: str) -> tuple[list[Example], dict[str, float]]:
        if lang not in self._index:
            raw: list[tuple[str, str]] = []
            for code in dict.fromkeys((lang, "en")):
                data = self.languages.get(code)
                if data:
                    raw += [(intent, text) for intent, texts in data.intents.items() for text in texts]
            counted = [(intent, text, features(normalise(text))) for intent, text in raw]
            df: Counter[str] = Counter()
            for _, _, feats in counted:
                df.update(feats.keys())
            n = max(1, len(counted))
            idf = {f: math.log((n + 1) / (c + 1)) + 1.0 for f, c in df.items()}
            examples = []
            for intent, text, feats in counted:
                weights = {f: c * idf[f] for f, c in feats.items()}
                norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
                examples.append(Example(intent, text, weights, norm))
            postings: dict[str, list[tuple[int, float, float]]] = {}
            for number, example in enumerate(examples):
                for feature, weight in example.weights.items():
                    postings.setdefault(feature, []).append((number, weight, weight * weight))
            self._postings[lang] = postings
            self._rarest[lang] = max(idf.values(), default=1.0)  # the weight of a feature no example has
            self._index[lang] = (examples, idf)
        return self._index[lang]

    def _lists(self, lang: str, attr: str) -> list[Any]:
        return [getattr(self.languages[code], attr) for code in dict.fromkeys((lang, "en")) if code in self.languages]

    def _keywords(self, lang: str, attr: str) -> list[tuple[str, str, Keyword]]:
        """A language's (and English's) words of one kind, normalised and folded once:
        (what the word stands for, its normalised form, its folded form). Every text is
        checked against all of them."""
        key = (lang, attr)
        if key not in self._prepared:
            table: list[tuple[str, str, Keyword]] = []
            for entries in self._lists(lang, attr):
                named = entries.items() if isinstance(entries, dict) else [("", entries)]
                for name, keywords in named:
                    for keyword in keywords:
                        norm = keyword_form(keyword)
                        if norm:
                            table.append((name, norm, prepare_keyword(norm)))
            self._prepared[key] = table
        return self._prepared[key]

    # -- reading a text ------------------------------------------------------------------------

    def understand(self, text: str, lang: str) -> Understanding:
        norm = normalise(text)
        slots = self.slots(norm, lang)
        if not norm:
            return Understanding(text, UNKNOWN, 0.0, slots)
        if self.is_danger_word(norm, lang):
            return Understanding(text, "danger", 1.0, slots, danger_word=True)
        examples, idf = self._examples(lang)
        feats = features(norm)
        default_idf = self._rarest[lang]
        query = {f: c * idf.get(f, default_idf) for f, c in feats.items()}
        qnorm = math.sqrt(sum(w * w for w in query.values())) or 1.0
        # Only the examples with a feature in common are scored, summed feature by feature.
        dots = [0.0] * len(examples)
        covers = [0.0] * len(examples)
        postings = self._postings[lang]
        for f, q in query.items():
            for number, weight, squared in postings.get(f, ()):
                dots[number] += weight * q
                covers[number] += squared
        best: dict[str, float] = {}
        for number in compress(range(len(examples)), covers):
            example = examples[number]
            score = 0.55 * dots[number] / (example.norm * qnorm) + 0.45 * covers[number] / (example.norm ** 2)
            if score > best.get(example.intent, 0.0):
                best[example.intent] = score
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        if not ranked or ranked[0][1] < self.threshold:
            return Understanding(text, UNKNOWN, ranked[0][1] if ranked else 0.0, slots, ranked[:3])
        intent, score = ranked[0]
        return Understanding(text, intent, score, slots, ranked[1:4])

    def names_danger(self, text: str, lang: str) -> bool:
        """Whether a text holds a danger word (what `understand` checks first), without scoring
        it against every example: for a description typed into a report."""
        norm = normalise(text)
        return bool(norm) and self.is_danger_word(norm, lang)

    def is_danger_word(self, norm: str, lang: str) -> bool:
        return any(keyword_in(form, norm) for _, _, form in self._keywords(lang, "danger_words"))

    def answer(self, text: str, lang: str, *, whole: bool = False) -> str | None:
        """yes / no / not_sure / back / menu / skip / cancel / done, when a short text is one.
        Words are matched on word boundaries (ICU's, in scripts without spaces), so จ้า is
        not found in นายจ้าง; the longest word found wins, so "ไม่ใช่" (no) beats the "ใช่"
        (yes) inside it. With `whole`, only a text that is the word and polite particles
        counts (a description that says "they sent me back" is not "back")."""
        norm = normalise(text)
        tokens = words(norm)
        if not tokens or len(tokens) > ANSWER_MAX_WORDS:
            return None
        particles = {norm for _, norm, _ in self._keywords(lang, "particles")}
        while len(tokens) > 1 and tokens[-1] in particles:
            tokens = tokens[:-1]
        spans = {"".join(tokens[i:j]) for i in range(len(tokens)) for j in range(i + 1, len(tokens) + 1)}
        dense = "".join(tokens)
        best: tuple[int, str] | None = None
        for name, norm, _ in self._keywords(lang, "answers"):
            kw = norm.replace(" ", "")
            found = kw == dense if whole else kw in spans
            if kw and found and (best is None or len(kw) > best[0]):
                best = (len(kw), name)
        return best[1] if best else None

    def slots(self, norm: str, lang: str) -> dict[str, str]:
        slots: dict[str, str] = {}
        found = self._countries(norm, lang)
        if found:
            slots.update(self._route(norm, lang, found))
        category = self._longest(norm, lang, "categories")
        if category:
            slots["category"] = category
        return slots

    def country(self, text: str, lang: str) -> str | None:
        found = self._countries(normalise(text), lang)
        return found[0][1] if len(found) == 1 else None

    def _countries(self, norm: str, lang: str) -> list[tuple[int, str]]:
        dense = norm.replace(" ", "")
        hits: dict[str, int] = {}
        for code, kw, form in self._keywords(lang, "countries"):
            if keyword_in(form, norm):
                where = dense.find(kw.replace(" ", ""))
                hits[code] = min(hits.get(code, 10**6), where if where >= 0 else 10**5)
        return sorted((pos, code) for code, pos in hits.items())

    def _route(self, norm: str, lang: str, found: list[tuple[int, str]]) -> dict[str, str]:
        """Origin and destination from the countries named: a country right after a "to"
        word (or one people only go to) is the destination, right after a "from" word the
        origin; otherwise the first named is the origin, unless it is Thailand."""
        dense = norm.replace(" ", "")
        to_ends = self._marker_ends(dense, lang, "to_words")
        from_ends = self._marker_ends(dense, lang, "from_words")

        def gap(pos: int, ends: dict[int, bool]) -> int:
            gaps = [pos - end for end, latin in ends.items() if 0 <= pos - end <= (0 if latin else 4)]
            return min(gaps, default=99)

        slots: dict[str, str] = {}
        for pos, code in found:
            to_gap, from_gap = gap(pos, to_ends), gap(pos, from_ends)
            if from_gap < to_gap and "origin" not in slots:
                slots["origin"] = code
            elif (to_gap < 99 or code in DESTINATION_ONLY) and "destination" not in slots:
                slots["destination"] = code
        for _, code in found:
            if code in slots.values():
                continue
            if "origin" not in slots and code != "TH":
                slots["origin"] = code
            elif "destination" not in slots:
                slots["destination"] = code
            elif "origin" not in slots:
                slots["origin"] = code
        return slots

    def _marker_ends(self, dense: str, lang: str, attr: str) -> dict[int, bool]:
        """Where each "to"/"from" word ends in the text without spaces, and whether it is Latin."""
        out: dict[int, bool] = {}
        for _, norm, _ in self._keywords(lang, attr):
            kw = norm.replace(" ", "")
            latin = bool(kw) and all(ch < "\u0250" for ch in kw)
            start = dense.find(kw) if kw else -1
            while start >= 0:
                out[start + len(kw)] = latin
                start = dense.find(kw, start + 1)
        return out

    def _longest(self, norm: str, lang: str, attr: str) -> str | None:
        best: tuple[int, str] | None = None
        for name, kw, form in self._keywords(lang, attr):
            if keyword_in(form, norm) and (best is None or len(kw) > best[0]):
                best = (len(kw), name)
        return best[1] if best else None


@dataclass
class EvalResult:
    lang: str
    total: int
    correct: int
    danger_total: int
    danger_found: int
    danger_unknown: int
    misses: list[tuple[str, str, str]]

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def danger_recall(self) -> float:
        return self.danger_found / self.danger_total if self.danger_total else 1.0


def evaluate(understander: Understander, path: Path) -> list[EvalResult]:
    """Accuracy per language and recall of danger on phrases the examples never held.
    `path` is one evaluation file (`language:` and `cases:`) or a folder of them."""
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    results = []
    for file in files:
        data = load_yaml(file) or {}
        lang = str(data.get("language") or file.stem)
        result = EvalResult(lang, 0, 0, 0, 0, 0, [])
        for case in data.get("cases") or []:
            text, expected = str(case["text"]), str(case["intent"])
            got = understander.understand(text, lang).intent
            result.total += 1
            result.correct += got == expected
            if expected == "danger":
                result.danger_total += 1
                result.danger_found += got == "danger"
                result.danger_unknown += got == UNKNOWN
            if got != expected:
                result.misses.append((text, expected, got))
        results.append(result)
    return results
