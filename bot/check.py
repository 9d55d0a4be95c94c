"""`python -m bot check`: validates every flow, content and locale file.

Errors name file and line and make the command exit non-zero; the coverage table shows,
per language, how complete and how reviewed the texts are.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from babel.messages.pofile import PoFileError

from bot import features
from bot.engine.content import Content, load_content
from bot.engine.events import MAX_MESSAGE_CHARS
from bot.engine.flows import FlowSet, load_flows, text_keys
from bot.engine.i18n import CODE_KEYS, LANGUAGES, SOURCE_LANGUAGE, Locale, load_locale, placeholders
from bot.engine.markup import html_problems
from bot.engine.myanmar import is_zawgyi
from bot.engine.understand import Understander
from bot.engine.yamlfile import ContentError, Problem

SCRIPT_RANGES = {
    "km": ((0x1780, 0x17FF), (0x19E0, 0x19FF)),
    "lo": ((0x0E80, 0x0EFF),),
    "th": ((0x0E00, 0x0E7F),),
    "my": ((0x1000, 0x109F), (0xAA60, 0xAA7F), (0xA9E0, 0xA9FF)),
}
SCRIPT_NAMES = {"km": "Khmer", "lo": "Lao", "th": "Thai", "vi": "Vietnamese", "en": "English", "my": "Burmese"}
COMMAND_DESCRIPTION_LIMIT = 256
_NOISE = re.compile(r"<code>.*?</code>|(?<!\w)/[a-z_]+|<[^>]+>|\{\w+\}|https?://\S+|[\w.-]+\.(?:com|org|net|gov|int|vn|kh|la|th|mm|go\.th)\S*")


def _in(ch: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= ord(ch) <= hi for lo, hi in ranges)


def _letters(text: str) -> list[str]:
    return [ch for ch in _NOISE.sub(" ", text) if unicodedata.category(ch).startswith("L")]


def script_problem(lang: str, text: str) -> str | None:
    """Whether a text is plainly not written in its language's script."""
    letters = _letters(text)
    if len(letters) < 4:
        return None
    if lang == "my" and is_zawgyi(text):
        return "written in Zawgyi, not Unicode (most phones show it as garbage): retype it with a Unicode keyboard"
    if lang in SCRIPT_RANGES:
        native = sum(_in(ch, SCRIPT_RANGES[lang]) for ch in letters)
        if native / len(letters) < 0.4:
            return f"not in {SCRIPT_NAMES[lang]} script ({native} of {len(letters)} letters are)"
        return None
    foreign = [ch for ch in letters if ord(ch) > 0x24F and not 0x1E00 <= ord(ch) <= 0x1EFF]
    if len(foreign) / len(letters) > 0.2:
        return f"not in Latin script ({len(foreign)} of {len(letters)} letters are other scripts)"
    if lang == "vi" and len(letters) >= 20:
        marked = sum(1 for ch in letters if ch in "đĐ" or unicodedata.decomposition(ch) != "")
        if marked == 0:
            return "no Vietnamese letter with a diacritic: untranslated English?"
    return None


@dataclass
class Coverage:
    lang: str
    needed: int
    missing: int = 0
    unreviewed: int = 0
    placeholder: int = 0
    too_long: int = 0
    wrong_script: int = 0
    bad_html: int = 0

    @property
    def percent(self) -> float:
        return 100.0 * (self.needed - self.missing) / self.needed if self.needed else 100.0


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    facts_shown: int = 0
    facts_hidden: int = 0
    hotlines_shown: int = 0
    hotlines_hidden: int = 0
    facts_without_source: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _needed_keys(flows: FlowSet, content: Content) -> dict[str, tuple[Path, int]]:
    needed: dict[str, tuple[Path, int]] = {}
    for flow in flows.flows.values():
        for key, line in text_keys(flow):
            needed.setdefault(key, (flow.path, line))
        for step in flow.steps.values():
            for choice in step.choices:
                if choice.label_lang and choice.label_lang not in LANGUAGES:
                    needed.setdefault(f"language {choice.label_lang}", (flow.path, choice.line))
    for command in flows.commands.values():
        needed.setdefault(command.description, (flows.commands_path, command.line))
        if command.keywords:
            needed.setdefault(command.keywords, (flows.commands_path, command.line))
    for key, path, line in content.text_keys():
        needed.setdefault(key, (path, line))
    for country in content.hotlines:
        needed.setdefault(f"country.{country}", (content.paths["hotlines"], 0))
    for key in (*CODE_KEYS, *sorted(features.text_keys())):
        needed.setdefault(key, (Path("bot"), 0))
    return needed


def _check_locale(loc: Locale, source: Locale, needed: dict[str, tuple[Path, int]], report: Report, descriptions: set[str]) -> Coverage:
    cov = Coverage(loc.code, len(needed))
    for key in needed:
        if key not in loc.texts:
            cov.missing += 1
            path, line = needed[key]
            where = f" (used at {path.name}:{line})" if line else ""
            report.problems.append(Problem(loc.path, 0, f"missing text '{key}'{where}"))
    for key, text in loc.texts.items():
        line = loc.lines.get(key, 0)
        if key in loc.fuzzy:
            cov.unreviewed += 1
        if key in source.texts and placeholders(text) != placeholders(source.texts[key]):
            cov.placeholder += 1
            report.problems.append(Problem(loc.path, line, f"'{key}': placeholders {sorted(placeholders(text))} differ from English {sorted(placeholders(source.texts[key]))}"))
        if len(text) > MAX_MESSAGE_CHARS:
            cov.too_long += 1
            report.problems.append(Problem(loc.path, line, f"'{key}': {len(text)} characters, over Telegram's {MAX_MESSAGE_CHARS}"))
        if key in descriptions and len(text) > COMMAND_DESCRIPTION_LIMIT:
            cov.too_long += 1
            report.problems.append(Problem(loc.path, line, f"'{key}': a command description over {COMMAND_DESCRIPTION_LIMIT} characters"))
        if not key.startswith("keywords."):
            why = script_problem(loc.code, text)
            if why:
                cov.wrong_script += 1
                report.problems.append(Problem(loc.path, line, f"'{key}': {why}"))
        for why in html_problems(text):
            cov.bad_html += 1
            report.problems.append(Problem(loc.path, line, f"'{key}': {why}"))
        if key not in needed and key in source.texts:
            report.warnings.append(Problem(loc.path, line, f"'{key}' is not used by any flow or content file"))
    return cov


def private_file_warnings(paths: list[Path]) -> list[Problem]:
    """The key file and the database hold what must stay private: warn when other local
    users can read them."""
    found = []
    for path in paths:
        if path.exists() and path.stat().st_mode & 0o077:
            found.append(Problem(path, 0, f"readable by other users of this machine (mode {oct(path.stat().st_mode & 0o777)}); "
                                          f"run: chmod 600 {path}"))
    return found


def check_project(flows_dir: Path, locales_dir: Path, private_files: list[Path] | None = None) -> Report:
    report = Report()
    report.warnings += private_file_warnings(private_files or [])
    flows = content = None
    try:
        Understander.from_dir(flows_dir / "understanding")
    except ContentError as exc:
        report.problems += exc.problems
    try:
        flows = load_flows(flows_dir)
    except ContentError as exc:
        report.problems += exc.problems
    try:
        content = load_content(flows_dir)
    except ContentError as exc:
        report.problems += exc.problems

    locales: dict[str, Locale] = {}
    for lang in LANGUAGES:
        path = locales_dir / f"{lang}.po"
        if not path.exists():
            report.problems.append(Problem(path, 0, f"missing locale file for {SCRIPT_NAMES[lang]}"))
            continue
        try:
            locales[lang] = load_locale(path)
        except (PoFileError, ValueError) as exc:
            report.problems.append(Problem(path, 0, f"not a valid PO file: {exc}"))
    if flows is None or content is None or SOURCE_LANGUAGE not in locales:
        return report

    shown_facts = [f for f in content.facts if f.shown]
    report.facts_shown, report.facts_hidden = len(shown_facts), len(content.facts) - len(shown_facts)
    all_hotlines = [h for hs in content.hotlines.values() for h in hs]
    report.hotlines_shown = sum(h.shown for h in all_hotlines)
    report.hotlines_hidden = len(all_hotlines) - report.hotlines_shown
    report.facts_without_source = sum(1 for f in content.facts if not f.sources) + sum(1 for h in all_hotlines if not h.sources)
    for fact in content.facts:
        if not fact.shown and fact.text_key in locales[SOURCE_LANGUAGE].texts:
            report.warnings.append(Problem(content.paths["facts"], fact.line, f"fact '{fact.id}' is {fact.status}: its text is never shown"))

    known_actions = features.action_names()
    for flow in flows.flows.values():
        for step in flow.steps.values():
            if step.action and step.action not in known_actions:
                report.problems.append(Problem(flow.path, step.line, f"step '{step.id}': action '{step.action}' is not provided by any feature"))

    report.problems += features.content_problems(flows_dir, flows)
    needed = _needed_keys(flows, content)
    descriptions = {c.description for c in flows.commands.values()}
    source = locales[SOURCE_LANGUAGE]
    for lang in LANGUAGES:
        if lang in locales:
            report.coverage.append(_check_locale(locales[lang], source, needed, report, descriptions))
    return report


def format_report(report: Report) -> str:
    lines = [str(p) for p in report.problems]
    lines += [f"warning: {w}" for w in report.warnings]
    if report.coverage:
        lines.append("")
        header = f"{'lang':<5}{'keys':>6}{'missing':>9}{'coverage':>10}{'unreviewed':>12}{'placeholder':>13}{'too long':>10}{'script':>8}{'html':>6}"
        lines.append(header)
        lines.append("-" * len(header))
        for c in report.coverage:
            lines.append(f"{c.lang:<5}{c.needed:>6}{c.missing:>9}{c.percent:>9.1f}%{c.unreviewed:>12}{c.placeholder:>13}{c.too_long:>10}{c.wrong_script:>8}{c.bad_html:>6}")
        lines.append("")
        lines.append(f"facts: {report.facts_shown} shown, {report.facts_hidden} uncertain (hidden); "
                     f"numbers: {report.hotlines_shown} shown, {report.hotlines_hidden} uncertain (hidden); "
                     f"without a source: {report.facts_without_source}")
        total_unreviewed = sum(c.unreviewed for c in report.coverage)
        lines.append(f"unreviewed translations (fuzzy, awaiting a native speaker): {total_unreviewed}")
    lines.append("check: OK" if report.ok else f"check: {len(report.problems)} error(s)")
    return "\n".join(lines)
