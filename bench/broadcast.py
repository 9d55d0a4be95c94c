"""Benchmark: a campaign to many subscribers through the real Telegram stack against the
fake Bot API (in its own process), which answers 429 above the configured rate.

Prints, per phase: achieved rate ÷ configured rate, the number of 429s, peak RSS of the
bot process, and the p99 latency of replies to users chatting during the broadcast.

    python -m bench.broadcast                      # 100,000 subscribers: 1000/s whole campaign, 30/s first 2 minutes
    python -m bench.broadcast --subscribers 5000 --phases 1000:all
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
from cryptography.fernet import Fernet
from sqlalchemy import insert
from sqlmodel import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.app import build_core  # noqa: E402
from bot.channels.telegram import TelegramChannel  # noqa: E402
from bot.features.broadcasts import feature  # noqa: E402
from bot.settings import Settings  # noqa: E402
from storage.broadcasts import Subscription  # noqa: E402
from storage.models import User  # noqa: E402

TOKEN = "123456:TEST-TOKEN"
LANGS = ("km", "lo", "th", "vi", "en")
CHATTERS = 20


def daytime_zone(now: datetime) -> str:
    """A fixed-offset zone where it is now between 09:00 and 19:00, so quiet hours do not defer."""
    for offset in range(-12, 15):
        if 9 <= (now + timedelta(hours=offset)).hour < 19:
            return f"Etc/GMT{'-' if offset >= 0 else '+'}{abs(offset)}"
    return "UTC"


async def fill(settings: Settings, subscribers: int) -> None:
    core = await build_core(settings)
    zone = daytime_zone(datetime.now(timezone.utc))
    now = datetime.now(timezone.utc)
    async with core.db.transaction() as session:
        admin = User(channel="telegram", address="1", lang="en", created_at=now)
        session.add(admin)
        for start in range(0, subscribers, 5000):
            users = [{"channel": "telegram", "address": str(2_000_000 + i), "lang": LANGS[i % 5], "reachable": True, "created_at": now}
                     for i in range(start, min(start + 5000, subscribers))]
            await session.exec(insert(User), params=users)  # type: ignore[call-overload]
        await session.flush()
        from sqlmodel import col

        ids = (await session.exec(select(User.id).where(col(User.address) != "1"))).all()
        for start in range(0, len(ids), 5000):
            subs = [{"user_id": uid, "active": True, "topics": ["scams"], "timezone": zone, "asked_at": now, "changed_at": now}
                    for uid in ids[start : start + 5000]]
            await session.exec(insert(Subscription), params=subs)  # type: ignore[call-overload]
    await core.close()


async def stats(session: aiohttp.ClientSession, base: str, times: bool = False) -> dict:
    async with session.get(f"{base}/__fake__/stats" + ("?times=1" if times else "")) as resp:
        return await resp.json()


async def phase(rate: float, seconds: float | None, subscribers: int, workdir: Path, port: int) -> dict:
    db = workdir / f"bench-{int(rate)}.db"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{db}", telegram_bot_token=TOKEN,
                        telegram_api_base_url=f"http://127.0.0.1:{port}/bot", send_rate=rate, api_port=0,
                        saferoute_keys=os.environ["SAFEROUTE_KEYS"], poll_timeout=2)
    fill_started = time.monotonic()
    await fill(settings, subscribers)
    print(f"  {subscribers} subscribers stored in {time.monotonic() - fill_started:.1f} s", flush=True)

    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.bot_api", "--port", str(port), "--rate-limit", str(rate)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    fake.stdout.readline()
    base = f"http://127.0.0.1:{port}"
    core = await build_core(settings)
    channel = TelegramChannel(TOKEN, settings.telegram_api_base_url, core.conversations, core.inbox, core.outbox,
                              core.flows, core.texts, poll_timeout=2, rate=rate)
    broadcasts = feature(core)
    tasks: list[asyncio.Task] = []
    try:
        async with core.db.transaction() as session:
            admin = (await session.exec(select(User).where(User.address == "1"))).one()
            await broadcasts.campaigns.create(session, admin, name="bench", texts={lang: f"Awareness message ({lang})" for lang in LANGS},
                                              button={"flow": "scam"} if core.texts.has("broadcast.button.scam") else None, paid=rate > 30)
        enqueue_started = time.monotonic()
        await broadcasts.send_due()
        print(f"  campaign queued for {subscribers} in {time.monotonic() - enqueue_started:.1f} s", flush=True)

        await channel.start()
        tasks = [asyncio.create_task(channel.sender.run()), asyncio.create_task(channel.fetch_forever())]
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            chatter = 0
            while True:
                await asyncio.sleep(0.5)
                chatter += 1
                await http.post(f"{base}/__fake__/user_sends",
                                json={"user_id": 900_000 + chatter % CHATTERS, "text": "/help", "language_code": "en"})
                current = await stats(http, base)
                elapsed = time.monotonic() - started
                if seconds is not None and elapsed >= seconds + 2:
                    break
                if seconds is None and current["sent"] >= subscribers + chatter - 5:
                    break
                if elapsed > 3600:
                    break
            final = await stats(http, base, times=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.app.shutdown()
        await core.close()
        fake.terminate()
        fake.wait()
    times = sorted(final["sent_times"])
    latencies = sorted(final["reply_latencies"])
    first = times[0]
    window = seconds if seconds is not None else (times[-1] - first)
    counted = [t for t in times if t - first <= window]
    achieved = len(counted) / window if window else 0.0
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"rate": rate, "window_s": round(window, 1), "messages": len(counted), "achieved_per_s": round(achieved, 1),
            "ratio": round(achieved / rate, 3), "too_many": final["too_many"], "replies": len(latencies),
            "reply_p99_s": round(p99, 3), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--phases", default="1000:all,30:120", help="RATE:SECONDS or RATE:all, comma-separated")
    parser.add_argument("--port", type=int, default=18081)
    options = parser.parse_args()
    os.environ.setdefault("SAFEROUTE_KEYS", Fernet.generate_key().decode())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in options.phases.split(","):
            rate_text, span = spec.split(":")
            print(f"phase: {rate_text}/s, {'whole campaign' if span == 'all' else span + ' s'}", flush=True)
            result = await phase(float(rate_text), None if span == "all" else float(span), options.subscribers, Path(tmp), options.port)
            print("  " + json.dumps(result), flush=True)
            results.append(result)
    print()
    print(f"{'rate/s':>7} {'window s':>9} {'sent':>7} {'achieved/s':>11} {'ratio':>6} {'429s':>5} {'reply p99 s':>12} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['rate']:>7.0f} {r['window_s']:>9} {r['messages']:>7} {r['achieved_per_s']:>11} {r['ratio']:>6} {r['too_many']:>5} "
              f"{r['reply_p99_s']:>12} {r['peak_rss_mb']:>12}")


if __name__ == "__main__":
    asyncio.run(main())
