"""The terminal chat: the same engine and database as Telegram, with numbered buttons."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from bot.app import Core
from bot.channels.terminal import TerminalChat, plain
from bot.settings import PROJECT_ROOT

KHMER = re.compile(r"[\u1780-\u17ff]")


def number_of(output: str, label: str) -> str:
    """The number the terminal printed before a button label (the last one shown)."""
    matches = re.findall(rf"\[(\d+)\] {re.escape(label)}\n", output)
    assert matches, f"no button {label!r} in the output"
    return matches[-1]


async def test_a_khmer_speaker_walks_the_guidance_journey_in_the_terminal(core: Core) -> None:
    km = lambda key: core.texts.get("km", key)  # noqa: E731
    out = io.StringIO()
    chat = TerminalChat(core.conversations, core.outbox, core.texts, user="sokha", lang="km", out=out)
    lines = iter(["/start"])
    chat_lines: list[str] = []

    async def say(line: str) -> str:
        before = len(out.getvalue())
        await chat.send(line)
        chat_lines.append(line)
        return out.getvalue()[before:]

    async with core.db.transaction() as session:
        await core.engine.set_language(session, "terminal", "sokha", "km")
    shown = await say(next(lines))
    assert plain(km("menu.prompt")) in shown
    shown = await say(number_of(shown, km("menu.guidance")))
    assert km("guide.ask_origin") in shown
    shown = await say(number_of(shown, km("country.KH")))
    shown = await say(number_of(shown, km("country.TH")))
    shown = await say(number_of(shown, km("guide.topic.documents")))
    assert plain(km("fact.kh_documents"))[:30] in shown
    assert "KH-10" not in shown, "source ids stay in the data"
    sources = await say(number_of(shown, km("card.sources")))
    assert all(name in sources for name in [core.content.sources["KH-10"].name or core.content.sources["KH-10"].publisher])
    assert len(KHMER.findall(shown)) > 100
    shown = await say(number_of(sources, km("guide.topic.red_flags")))
    assert plain(km("fact.rf_tourist_visa"))[:30] in shown


def test_python_m_bot_chat_runs_in_khmer_with_no_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    result = subprocess.run([sys.executable, "-m", "bot", "chat", "--lang", "km"], input="1\n1\n2\n/quit\n",
                            capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[1]" in result.stdout
    assert len(KHMER.findall(result.stdout)) > 50


def test_run_without_a_token_says_so_in_one_line_and_points_to_chat(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'run.db'}"
    result = subprocess.run([sys.executable, "-m", "bot", "run"], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "python -m bot chat" in result.stderr
