"""The broadcast benchmark still runs end to end (its figures are for the README, not asserted here)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from bot.settings import PROJECT_ROOT


async def test_the_broadcast_benchmark_sends_a_small_campaign_and_prints_its_figures() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.broadcast", "--subscribers", "300", "--phases", "50:all",
        cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:  # the benchmark and the bot and fake it started go together
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    result = json.loads(next(line for line in text.splitlines() if line.strip().startswith("{")))
    assert result["messages"] >= 300, "every subscriber got the campaign"
    assert result["replies"] > 0 and result["peak_rss_mb"] > 0
    assert "bot peak RSS MB" in text


async def test_the_update_path_benchmark_runs_saferoute_and_the_echo_bot_and_prints_the_table() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.updates", "--users", "4", "--actions", "16", "--bots", "saferoute,ptb", "--population", "300,30",
        cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 180)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    result = json.loads(text.strip().splitlines()[-1])
    assert result["SafeRoute (SQLite)"]["failed"] == 0, "every step of every journey was answered (a whole report included)"
    assert result["PTB echo"]["failed"] == 0 and "SafeRoute ÷ PTB echo" in text
