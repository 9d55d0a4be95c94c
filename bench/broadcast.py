"""Benchmark: a campaign to many subscribers, sent by a real `python -m bot run` process
against the fake Bot API (in a process of its own), which answers 429 above the configured
rate, while users chat with the bot.

Prints, per phase: achieved rate ÷ configured rate, the number of 429s, the peak RSS of the
bot process (VmHWM), and the p99 latency of the replies to the users chatting during the
broadcast. The subscribers and the campaign are written to the database before the bot
starts; the bot's own scheduler fires the campaign at start.

    python -m bench.broadcast                      # 100,000 subscribers: 1000/s whole campaign, 30/s first 2 minutes
    python -m bench.broadcast --subscribers 5000 --phases 1000:all
    python -m bench.broadcast --database postgresql+asyncpg://postgres@127.0.0.1:5432/test
                                                   # on PostgreSQL: a fresh database per phase, dropped after
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlmodel import col, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.app import build_core  # noqa: E402
from bot.features.broadcasts import feature  # noqa: E402
from bot.settings import Settings  # noqa: E402
from storage.clock import utcnow
from storage.broadcasts import Subscription  # noqa: E402
from storage.models import User  # noqa: E402

TOKEN = "123456:AAF-test-token-shaped-like-telegrams-35"
LANGS = ("km", "lo", "th", "vi", "en")
CHATTERS = 20
CHAT_EVERY = 0.5


def daytime_zone(now: datetime) -> str:
    """A fixed-offset zone where it is now between 09:00 and 19:00, so quiet hours do not defer."""
    for offset in range(-12, 15):
        if 9 <= (now + timedelta(hours=offset)).hour < 19:
            return f"Etc/GMT{'-' if offset >= 0 else '+'}{abs(offset)}"
    return "UTC"


async def prepare(settings: Settings, subscribers: int, *, paid: bool) -> None:
    """Subscribers and a campaign due now, written straight to the database."""
    core = await build_core(settings)
    now = utcnow()  # the bot's clock, simulated or not, so that the zone is in daytime for the bot too
    zone = daytime_zone(now)
    try:
        async with core.db.transaction() as session:
            admin = User(channel="telegram", address="1", lang="en", created_at=now)
            session.add(admin)
            for start in range(0, subscribers, 5000):
                users = [{"channel": "telegram", "address": str(2_000_000 + i), "lang": LANGS[i % 5], "reachable": True, "created_at": now}
                         for i in range(start, min(start + 5000, subscribers))]
                await session.exec(insert(User), params=users)  # type: ignore[call-overload]
            await session.flush()
            ids = (await session.exec(select(User.id).where(col(User.address) != "1"))).all()
            for start in range(0, len(ids), 5000):
                subs = [{"user_id": uid, "active": True, "topics": ["scams"], "timezone": zone, "asked_at": now, "changed_at": now}
                        for uid in ids[start : start + 5000]]
                await session.exec(insert(Subscription), params=subs)  # type: ignore[call-overload]
            await feature(core).campaigns.create(session, admin, name="bench", texts={lang: f"Awareness message ({lang})" for lang in LANGS},
                                                 button={"flow": "scam"}, paid=paid)
    finally:
        await core.close()


async def _on_server(server_url: str, *statements: str) -> None:
    import asyncpg

    url = make_url(server_url)
    conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username, password=url.password, database=url.database)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fresh_database(server_url: str | None, workdir: Path, name: str) -> str:
    """An empty database for one phase: a SQLite file, or a new database on the PostgreSQL
    server of `server_url` (the benchmark never writes into an existing one)."""
    if server_url is None:
        return f"sqlite+aiosqlite:///{workdir / name}.db"
    await _on_server(server_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str | None, name: str) -> None:
    if server_url is not None:
        await _on_server(server_url, f'DROP DATABASE IF EXISTS "{name}"')


def stop_processes(bot: subprocess.Popen[Any], fake: subprocess.Popen[Any]) -> None:
    """The bot first (SIGTERM, a minute to finish, then SIGKILL), then the fake it talks to."""
    bot.terminate()
    try:
        bot.wait(60)
    except subprocess.TimeoutExpired:
        bot.kill()
    fake.terminate()
    fake.wait(10)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def stats(http: aiohttp.ClientSession, base: str, times: bool = False) -> dict[str, Any]:
    async with http.get(f"{base}/__fake__/stats" + ("?times=1" if times else "")) as response:
        return dict(await response.json())


async def phase(rate: float, seconds: float | None, subscribers: int, workdir: Path, port: int, server_url: str | None) -> dict[str, Any]:
    name = f"saferoute_bench_{int(rate)}"
    try:
        return await _phase(rate, seconds, subscribers, workdir, port, await fresh_database(server_url, workdir, name))
    finally:
        await drop_database(server_url, name)


async def _phase(rate: float, seconds: float | None, subscribers: int, workdir: Path, port: int, database_url: str) -> dict[str, Any]:
    paid = rate > 30
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN,
           "DATABASE_URL": database_url, "POLL_TIMEOUT": "2", "API_PORT": "0", "LOG_LEVEL": "WARNING",
           "PAID_BROADCAST": "true" if paid else "false", "PAID_SEND_RATE" if paid else "SEND_RATE": str(rate)}
    settings = Settings(database_url=env["DATABASE_URL"], saferoute_keys=os.environ["SAFEROUTE_KEYS"])
    started = time.monotonic()
    await prepare(settings, subscribers, paid=paid)
    print(f"  {subscribers} subscribers and the campaign stored in {time.monotonic() - started:.1f} s", flush=True)

    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.bot_api", "--port", str(port), "--rate-limit", str(rate)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    base = fake.stdout.readline().split(" on ")[-1].strip().removesuffix("/bot")  # the port it bound (0: any free one)
    env["TELEGRAM_API_BASE_URL"] = f"{base}/bot"
    with (workdir / f"bot-{int(rate)}.log").open("w") as log:
        bot = subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=ROOT, env=env, stdout=log, stderr=log)
    peak = float("nan")
    try:
        async with aiohttp.ClientSession() as http:
            while (await stats(http, base))["sent"] == 0:
                if bot.poll() is not None:
                    raise SystemExit(f"the bot stopped (exit {bot.returncode}); see {workdir}/bot-{int(rate)}.log")
                await asyncio.sleep(0.1)
            first = time.monotonic()
            chatter, reported = 0, first
            while True:
                await asyncio.sleep(CHAT_EVERY)
                chatter += 1
                await http.post(f"{base}/__fake__/user_sends",
                                json={"user_id": 900_000 + chatter % CHATTERS, "text": "/help", "language_code": "en"})
                current = await stats(http, base)
                elapsed = time.monotonic() - first
                if time.monotonic() - reported >= 10:
                    reported = time.monotonic()
                    print(f"  {elapsed:5.0f} s: {current['sent']} sent, {current['too_many']} 429s, bot RSS peak "
                          f"{peak_rss_mb(bot.pid):.0f} MB", flush=True)
                if seconds is not None and elapsed >= seconds + 2:
                    break
                if seconds is None and current["sent"] >= subscribers + chatter - 5:
                    break
                if elapsed > 3600 or bot.poll() is not None:
                    break
            await asyncio.sleep(1)  # the last replies
            final = await stats(http, base, times=True)
            peak = peak_rss_mb(bot.pid)
    finally:
        stop_processes(bot, fake)
    times = sorted(final["sent_times"])
    latencies = sorted(final["reply_latencies"])
    start = times[0]
    window = seconds if seconds is not None else (times[-1] - start)
    counted = [t for t in times if t - start <= window]
    achieved = len(counted) / window if window else 0.0
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else float("nan")
    return {"rate": rate, "window_s": round(window, 1), "messages": len(counted), "achieved_per_s": round(achieved, 1),
            "ratio": round(achieved / rate, 3), "too_many": final["too_many"], "replies": len(latencies),
            "reply_p99_s": round(p99, 3), "peak_rss_mb": round(peak, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--phases", default="1000:all,30:120", help="RATE:SECONDS or RATE:all, comma-separated")
    parser.add_argument("--port", type=int, default=0, help="the fake Bot API's port (default: any free one)")
    parser.add_argument("--database", default=None, metavar="POSTGRESQL_URL",
                        help="run on this PostgreSQL server (a fresh database per phase) instead of SQLite")
    options = parser.parse_args()
    os.environ.setdefault("SAFEROUTE_KEYS", Fernet.generate_key().decode())
    results = []
    print(f"store: {'PostgreSQL' if options.database else 'SQLite'}, {options.subscribers} subscribers", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in options.phases.split(","):
            rate_text, span = spec.split(":")
            print(f"phase: {rate_text}/s, {'whole campaign' if span == 'all' else span + ' s'}", flush=True)
            result = await phase(float(rate_text), None if span == "all" else float(span), options.subscribers, Path(tmp), options.port,
                                 options.database)
            print("  " + json.dumps(result), flush=True)
            results.append(result)
    print()
    print(f"{'rate/s':>7} {'window s':>9} {'sent':>7} {'achieved/s':>11} {'ratio':>6} {'429s':>5} {'replies':>8} {'reply p99 s':>12} "
          f"{'bot peak RSS MB':>16}")
    for r in results:
        print(f"{r['rate']:>7.0f} {r['window_s']:>9} {r['messages']:>7} {r['achieved_per_s']:>11} {r['ratio']:>6} {r['too_many']:>5} "
              f"{r['replies']:>8} {r['reply_p99_s']:>12} {r['peak_rss_mb']:>16}")


if __name__ == "__main__":
    asyncio.run(main())
