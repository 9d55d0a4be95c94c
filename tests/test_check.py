"""`python -m bot check`: the shipped content passes; each kind of broken file is named
with its file and line, and the command exits non-zero."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.check import check_project, format_report, script_problem
from bot.settings import PROJECT_ROOT, load_settings


@pytest.fixture
def content(tmp_path: Path) -> tuple[Path, Path]:
    flows, locales = tmp_path / "flows", tmp_path / "locales"
    shutil.copytree(PROJECT_ROOT / "flows", flows)
    shutil.copytree(PROJECT_ROOT / "locales", locales)
    return flows, locales


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


def test_the_shipped_content_passes_with_every_language_complete() -> None:
    report = check_project(PROJECT_ROOT / "flows", PROJECT_ROOT / "locales")
    assert report.ok, format_report(report)
    assert [c.lang for c in report.coverage] == ["km", "lo", "th", "vi", "en", "my"]
    assert all(c.percent == 100.0 for c in report.coverage)
    assert report.facts_without_source == 0
    assert report.facts_shown > 40 and report.hotlines_shown > 20


def test_the_command_prints_the_coverage_table_and_the_unreviewed_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "unreviewed" in out and "check: OK" in out
    assert out.count("100.0%") == 6


def test_a_step_leading_nowhere_is_named_with_file_and_line(content: tuple[Path, Path]) -> None:
    flows, locales = content
    guidance = flows / "guidance.yaml"
    replace_in(guidance, "next: destination}", "next: destinaton}")
    report = check_project(flows, locales)
    line = line_of(guidance, "destinaton")
    assert any(p.path == guidance and p.line == line and "destinaton" in p.message for p in report.problems), format_report(report)


def test_a_missing_translation_and_a_broken_placeholder_are_errors(content: tuple[Path, Path]) -> None:
    flows, locales = content
    lao = locales / "lo.po"
    text = lao.read_text(encoding="utf-8")
    start = text.index('msgid "guide.ask_origin"')
    end = text.index("\n\n", start)
    lao.write_text(text[:start] + text[end + 2 :], encoding="utf-8")
    thai = locales / "th.po"
    entry = thai.read_text(encoding="utf-8").split('msgid "hotlines.header"')[1].split("\n\n")[0]
    replace_in(thai, entry, entry.replace("{country}", "{land}"))
    report = check_project(flows, locales)
    messages = [str(p) for p in report.problems]
    assert any("lo.po" in m and "missing text 'guide.ask_origin'" in m for m in messages)
    header_line = line_of(thai, 'msgid "hotlines.header"')
    assert any(f"th.po:{header_line}" in m and "placeholders" in m for m in messages)
    assert {c.lang: c.missing for c in report.coverage}["lo"] == 1


def test_english_left_in_the_lao_file_and_a_text_too_long_for_telegram_are_errors(content: tuple[Path, Path]) -> None:
    flows, locales = content
    lao = locales / "lo.po"
    entry = lao.read_text(encoding="utf-8").split('msgid "menu.prompt"\nmsgstr "')[1].split('"')[0]
    replace_in(lao, f'msgstr "{entry}"', 'msgstr "What would you like to do?"')
    khmer = locales / "km.po"
    entry = khmer.read_text(encoding="utf-8").split('msgid "help.text"\nmsgstr "')[1].split('"\n')[0]
    replace_in(khmer, entry, "ជំនួយ" * 900)
    report = check_project(flows, locales)
    messages = [str(p) for p in report.problems]
    assert any("lo.po" in m and "menu.prompt" in m and "not in Lao script" in m for m in messages)
    assert any("km.po" in m and "help.text" in m and "over Telegram's 4096" in m for m in messages)
    assert main_exit_code(flows, locales) == 1


def test_a_fact_without_a_source_or_with_an_unknown_source_is_an_error(content: tuple[Path, Path]) -> None:
    flows, locales = content
    facts = flows / "data" / "facts.yaml"
    replace_in(facts, "sources: [KH-9, TH-15]", "sources: [KH-999]")
    report = check_project(flows, locales)
    assert any(p.path == facts and "KH-999" in p.message and p.line > 0 for p in report.problems)


def test_malformed_html_in_a_translation_is_an_error(content: tuple[Path, Path]) -> None:
    flows, locales = content
    vi = locales / "vi.po"
    entry = vi.read_text(encoding="utf-8").split('msgid "hotlines.header"\nmsgstr "')[1].split('"\n')[0]
    replace_in(vi, entry, entry.replace("</b>", "", 1))
    report = check_project(flows, locales)
    assert any("vi.po" in str(p) and "never closed" in p.message for p in report.problems)


def test_script_detection() -> None:
    assert script_problem("km", "សូមជ្រើសរើសភាសារបស់អ្នក។") is None
    assert script_problem("th", "Please choose your language") is not None
    assert script_problem("vi", "Bạn muốn làm gì?") is None
    assert script_problem("vi", "Please choose what you would like to do now") is not None
    assert script_problem("en", "ສະບາຍດີ ຍິນດີຕ້ອນຮັບ") is not None


def main_exit_code(flows: Path, locales: Path) -> int:
    import os

    old = dict(os.environ)
    os.environ.update(FLOWS_DIR=str(flows), LOCALES_DIR=str(locales))
    try:
        return main(["check"])
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.mark.parametrize(("given", "used"), [
    ("sqlite:///data/bot.db", "sqlite+aiosqlite:///data/bot.db"),
    ("postgresql://bot:pw@db/saferoute", "postgresql+asyncpg://bot:pw@db/saferoute"),
    ("postgres://bot@db/saferoute", "postgresql+asyncpg://bot@db/saferoute"),
    ("postgresql+asyncpg://bot@db/saferoute", "postgresql+asyncpg://bot@db/saferoute"),
])
def test_database_urls_in_the_forms_other_tools_use_pick_the_async_driver(given: str, used: str) -> None:
    assert load_settings(database_url=given).database_url == used


def test_a_database_url_that_cannot_work_is_one_line_saying_what_to_write() -> None:
    result = subprocess.run([sys.executable, "-m", "bot", "check"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**os.environ, "DATABASE_URL": "mysql://bot@db/x"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "postgresql://user:password@host/database" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_settings_prints_what_is_in_effect_with_secrets_masked() -> None:
    result = subprocess.run([sys.executable, "-m", "bot", "check", "--settings"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**os.environ, "DATABASE_URL": "postgresql://bot:hunter2@db/saferoute", "TELEGRAM_BOT_TOKEN": "123:SECRETTOKEN",
                                 "TELEGRAM_WEBHOOK_SECRET": "whsecret"})
    assert result.returncode == 0, result.stderr
    assert "postgresql+asyncpg://bot:••••@db/saferoute" in result.stdout
    assert "hunter2" not in result.stdout and "SECRETTOKEN" not in result.stdout and "whsecret" not in result.stdout
    assert re.search(r"^SEND_RATE\s+25", result.stdout, re.M)
