"""Two workers behind one webhook on one PostgreSQL database, as a national deployment runs:
a round-robin proxy (the load balancer) spreads Telegram's posts over both, so one person's
consecutive updates land on different workers, sometimes while the last is still being
handled. Every conversation must come out as if one process had handled it, and every
report must reach its partner's group exactly once."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlmodel import col, func, select

from bot.engine.i18n import Translator
from bot.settings import PROJECT_ROOT
from storage import connect
from storage.models import InboxEvent
from storage.reports import Report
from tests.fakes.bot_api import FakeBotApi
from tests.processes import BotProcess
from tests.story import TelegramUser

SECRET = "two-workers-secret"
BANGKOK = -1001000000101
PEOPLE = 100
LANGS = ("km", "lo", "th", "vi", "en")


class RoundRobin:
    """The load balancer: each post goes to the next worker's Unix socket, in turn."""

    def __init__(self, sockets: list[Path]) -> None:
        self.sockets = sockets
        self.turn = itertools.cycle(range(len(sockets)))
        self.forwarded: Counter[int] = Counter()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def forward(self, request: web.Request) -> web.Response:
        worker = next(self.turn)
        body = await request.read()
        try:
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.sockets[worker]))) as http:
                async with http.post(f"http://worker{request.path_qs}", data=body, headers={
                        "Content-Type": "application/json",
                        "X-Telegram-Bot-Api-Secret-Token": request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")}) as answer:
                    self.forwarded[worker] += answer.status == 200
                    return web.Response(status=answer.status, body=await answer.read())
        except aiohttp.ClientError:
            return web.Response(status=502)  # a worker not up yet: Telegram posts the update again

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.forward)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}/telegram/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def walk(user: TelegramUser, texts: Translator, lang: str, n: int) -> None:
    """Fourteen updates: the language, a whole report, then two commands typed back to back
    without waiting (so they are handled while each other is in flight)."""
    t = lambda key: texts.get(lang, key)  # noqa: E731
    await user.start_in(texts, lang)
    await user.send("/report")
    await user.press(t("report.danger.no"))
    await user.press(t("report.category.documents_wages"))
    await user.press(t("country.TH"))
    await user.press(t("province.TH.bangkok"))
    await user.press(t("report.affected.me"))
    await user.expect(re.escape(t("report.ask_description")[:30]))
    await user.send(f"Worker test {n}: the agency kept our passports")
    await user.press(t("report.attachments_done"))
    await user.press(t("report.contact.none"))
    await user.press(t("report.consent.yes"))
    await user.expect(re.escape(lead(t("report.received"))))
    await user.send("/hotlines")
    await user.send("/help")
    either = f"{re.escape(lead(t('hotlines.pick_country')))}|{re.escape(lead(t('help.text')))}"
    await user.expect(either)
    await user.expect(either)


def lead(text: str) -> str:
    """The start of a text as shown (before any markup or placeholder)."""
    return re.split(r"[<{\n]", text)[0][:24]


async def test_two_workers_behind_one_webhook_keep_every_conversation_and_deliver_each_report_once(
        postgres_url: str, fake_api: FakeBotApi, tmp_path: Path) -> None:
    fake = fake_api
    fake.add_group(BANGKOK, "Demo Bangkok")
    texts = Translator.from_dir(PROJECT_ROOT / "locales")
    sockets = [tmp_path / "worker-a.sock", tmp_path / "worker-b.sock"]
    balancer = RoundRobin(sockets)
    url = await balancer.start()
    # The production lease (tests elsewhere shorten it to see crashed senders' rows taken over):
    # a send held up longer than its lease on a loaded machine may be repeated by design.
    workers = [BotProcess(fake, postgres_url, tmp_path / f"worker-{name}.log", TELEGRAM_WEBHOOK_URL=url,
                          TELEGRAM_WEBHOOK_SECRET=SECRET, API_SOCKET=str(socket), OUTBOX_LEASE_SECONDS="60")
               for name, socket in zip("ab", sockets, strict=True)]
    try:
        await fake.wait_for(lambda: fake.webhook is not None and all(socket.exists() for socket in sockets), timeout=60)
        users = [TelegramUser(fake, 8_100_000 + n, "en") for n in range(PEOPLE)]
        await asyncio.gather(*(walk(user, texts, LANGS[n % 5], n) for n, user in enumerate(users)))

        for n, user in enumerate(users):
            t = lambda key, lang=LANGS[n % 5]: texts.get(lang, key)  # noqa: E731
            said = [m.text for m in fake.bot_messages(user.id)]
            assert sum(lead(t("report.received")) in text for text in said) == 1, f"person {n}: one receipt"
            hotlines = max(i for i, text in enumerate(said) if lead(t("hotlines.pick_country")) in text)
            help_ = max(i for i, text in enumerate(said) if lead(t("help.text")) in text)
            assert hotlines < help_, f"person {n}: typed back to back, answered in the order typed"

        db = await connect(postgres_url, migrate=False)
        try:
            async with db.session() as session:
                codes = list(await session.exec(select(Report.code)))
                reporters = (await session.exec(select(func.count(func.distinct(Report.reporter_id))))).one()
                statuses = dict((await session.exec(select(InboxEvent.status, func.count()).group_by(col(InboxEvent.status)))).all())
        finally:
            await db.close()
        assert len(codes) == PEOPLE and reporters == PEOPLE, "one report per person"
        await fake.wait_for(lambda: all(any(code in m.text for m in fake.bot_messages(BANGKOK)) for code in codes), timeout=60)
        cards = [m.text for m in fake.bot_messages(BANGKOK)]
        for code in codes:
            assert sum(code in card for card in cards) == 1, f"case {code} reached the partner's group exactly once"
        updates = 14 * PEOPLE
        assert statuses == {"done": updates}, f"every update handled once, none failed or left: {statuses}"
        assert min(balancer.forwarded.values()) >= updates // 3, f"both workers took a share: {dict(balancer.forwarded)}"
        print(f"\n{updates} updates from {PEOPLE} people over two workers: {dict(balancer.forwarded)}; {len(codes)} cards, none twice")
    finally:
        for worker in workers:
            await worker.stop()
        await balancer.stop()


async def test_a_case_closed_while_its_reporter_is_writing_never_takes_their_place(postgres_url: str) -> None:
    """Two workers: one handles the reporter's message (their row locked, their step about
    to move), the other a caseworker closing the case, which asks for feedback only of a
    reporter not in the middle of something. The caseworker's side waits for the reporter's
    transaction and then sees where they are: the reporter's step is kept and no feedback
    question arrives that their conversation would not expect."""
    from sqlalchemy import text

    from bot.app import build_core
    from bot.features.reports import feature
    from bot.settings import PROJECT_ROOT, Settings
    from storage.models import OutboxMessage, User
    from storage.people import load_person, save_conversation
    from storage.reports import Report

    settings = Settings(database_url=postgres_url, telegram_bot_token=None, flows_dir=PROJECT_ROOT / "flows",
                        locales_dir=PROJECT_ROOT / "locales")
    core = await build_core(settings)
    try:
        async with core.db.transaction() as session:
            reporter = User(channel="telegram", address="6601", lang="km")
            session.add(reporter)
            await session.flush()
            report = Report(code="CL05ED", reporter_id=reporter.id, lang="km", category="documents_wages", country="TH",
                            affected="me", contact_mode="anytime", partner_id="demo_bangkok")
            session.add(report)
        caseworker_done = asyncio.Event()

        async def caseworker_closes() -> None:
            async with core.db.transaction() as session:
                closed = await session.get(Report, report.id)
                assert closed is not None
                await feature(core).desk.tell_reporter(session, closed, "report.update_closed", ask_feedback=True)
            caseworker_done.set()

        async with core.db.transaction() as session:  # the reporter's message, being handled
            _, conversation, stored = await load_person(session, "telegram", "6601")
            closing = asyncio.create_task(caseworker_closes())
            deadline = asyncio.get_running_loop().time() + 30
            while not caseworker_done.is_set():  # until the caseworker's side waits for the reporter's row (or wrongly finishes)
                assert asyncio.get_running_loop().time() < deadline, "the caseworker's side neither waited nor finished"
                async with core.db.session() as watcher:
                    if (await watcher.exec(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))).scalar():  # type: ignore[call-overload]
                        break
                await asyncio.sleep(0.01)
            assert not caseworker_done.is_set(), "the caseworker's side waited for the reporter's transaction"
            conversation.flow, conversation.step = "report", "description"
            await save_conversation(session, conversation, stored=stored)
        await closing
        async with core.db.session() as session:
            kept = (await session.exec(text("SELECT flow, step FROM conversations WHERE user_id = :u").bindparams(u=reporter.id))).one()
            told = (await session.exec(select(OutboxMessage).where(OutboxMessage.chat == "6601"))).all()
        assert tuple(kept) == ("report", "description"), "the reporter's step is kept"
        assert [core.texts.get("km", "report.update_closed", code="CL05ED")[:20] in (row.payload or "") for row in told] == [True]
        assert "case_feedback" not in (told[0].payload or ""), "no feedback question while they are in the middle of a report"
    finally:
        await core.close()
