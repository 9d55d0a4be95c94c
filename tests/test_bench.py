"""The broadcast benchmark still runs end to end (its figures are for the README, not asserted here)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

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
    assert result["SafeRoute (SQLite)"]["fake_cpu_ms_per_update"] > 0 and result["PTB echo"]["cpu_ms_per_update"] > 0
    stages = {line.split("  ")[0]: line.split()[-1] for line in text.splitlines() if line.startswith(("stored", "handled", "sent"))}
    assert set(stages) == {"stored (the inbox, before confirming)", "handled (group commit, its transaction)", "sent (one request to the Bot API)"}, text
    assert int(stages["handled (group commit, its transaction)"]) == 4 * 16, "every update handled was counted by the bot itself"


def test_a_quantile_is_read_from_histogram_buckets_as_prometheus_reads_it() -> None:
    from bench.updates import quantile

    buckets = [(0.01, 10.0), (0.05, 50.0), (0.1, 90.0), (0.5, 100.0), (float("inf"), 100.0)]
    assert quantile(buckets, 0.5) == 0.05
    assert abs(quantile(buckets, 0.7) - 0.075) < 1e-9  # halfway through the 50–100 ms bucket
    assert abs(quantile(buckets, 0.99) - 0.46) < 1e-9
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) != quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5)  # nothing counted: NaN


def test_the_profile_summary_sets_waiting_apart_and_charges_each_layer(tmp_path: Path) -> None:
    """`bench.updates --profile` summarises a py-spy record: the event loop's epoll and
    SQLite's thread waiting for work are not busy time; a sample is charged to its innermost
    frame's layer (self) and to every layer on its stack (inclusive)."""
    from bench.profile import summarise

    loop = "main (bot/__main__.py:87);Handle._run (asyncio/events.py:80)"
    record = tmp_path / "record.txt"
    record.write_text("\n".join([
        f"{loop};Engine.handle (bot/engine/runner.py:152);Session.execute (sqlalchemy/orm/session.py:2300) 6",
        f"{loop};Engine.handle (bot/engine/runner.py:152);Understander.understand (bot/engine/understand.py:281) 2",
        f"{loop};TelegramChannel.deliver (bot/channels/telegram.py:470);ClientSession._request (aiohttp/client.py:600) 2",
        "main (bot/__main__.py:87);BaseSelector.select (selectors.py:468) 30",
        "Thread.run (threading.py:975);_connection_worker_thread (aiosqlite/core.py:59) 50",
    ]) + "\n")
    lines = summarise(record).splitlines()
    assert lines[0].startswith("10 busy samples (80 more waiting")
    shares = {line[:30].strip(): line[30:].split() for line in lines[2:] if line[:30].strip() and "%" in line}
    assert shares["SQLAlchemy ORM"] == ["60%", "60%"]
    assert shares["understanding"] == ["20%", "20%"]
    assert shares["aiohttp"] == ["20%", "20%"]
    assert shares["flow engine"] == ["0%", "80%"], "a layer with no time of its own still shows what it called"
    assert any(line.startswith("Engine.handle (engine/runner.py)") and line.endswith("80%") for line in lines)
