"""The web chat: the same flows in a browser. A Khmer speaker walks the guidance journey and a
Vietnamese speaker the report journey, pressing buttons and typing; a reload resumes; quick
exit leaves nothing on the page or in the history. First over the page's own protocol
(WebSocket, and long polling where WebSockets are blocked), then in headless Chromium from
the distribution's packages, with screenshots kept as test artefacts."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.api.app import build_api
from bot.app import Core
from bot.channels.web import CHANNEL, WebChat, new_session_id
from bot.features.broadcasts import feature
from bot.settings import PROJECT_ROOT
from tests.fakes.bot_api import visible_text

ARTEFACTS = PROJECT_ROOT / "tests" / "artefacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@pytest.fixture
async def web_chat(core: Core) -> AsyncIterator[tuple[TestClient, WebChat]]:
    chat = WebChat(core.conversations, core.outbox, core.texts)
    sending = asyncio.create_task(chat.sender.run())
    client = TestClient(TestServer(build_api(feature(core), web_chat=chat)))
    await client.start_server()
    try:
        yield client, chat
    finally:
        await client.close()
        await chat.sender.stop(sending)


class Page:
    """The page's side of the protocol, as app.js speaks it."""

    def __init__(self, client: TestClient, session: str, lang: str) -> None:
        self.client, self.session, self.lang = client, session, lang
        self.seen: list[dict[str, Any]] = []
        self.socket: Any = None

    async def open(self) -> Page:
        self.socket = await self.client.ws_connect(f"/chat/ws?lang={self.lang}")
        await self.socket.send_json({"session": self.session})  # first, and never in the URL (access logs)
        return self

    async def say(self, **data: Any) -> None:
        await self.socket.send_json(data)

    async def expect(self, pattern: str) -> dict[str, Any]:
        regex = re.compile(pattern, re.S)
        while True:
            item = await asyncio.wait_for(self.socket.receive_json(), 45)
            if item.pop("ack", False):
                await self.socket.send_json({"ack": item["ref"]})  # kept: as app.js confirms each item
            self.seen.append(item)
            if item.get("kind") == "message" and regex.search(visible_text(item["text"])):
                return item

    async def press(self, item: dict[str, Any], label: str) -> None:
        button = next((b for b in item["buttons"] + item["nav"] if b["label"] == label), None)
        assert button is not None, f"no button {label!r} in {[b['label'] for b in item['buttons'] + item['nav']]}"
        await self.say(choice=button["data"], ref=item["ref"])


async def test_a_khmer_speaker_walks_the_guidance_journey_over_the_websocket_and_a_new_page_continues(
        web_chat: tuple[TestClient, WebChat], core: Core) -> None:
    client, _ = web_chat
    km = lambda key, **p: core.texts.get("km", key, **p)  # noqa: E731
    page = await Page(client, new_session_id(), "km").open()
    await page.say(text="/start")
    picker = await page.expect(re.escape(visible_text(km("language.pick"))))
    await page.press(picker, km("language.self_name"))
    menu = await page.expect(re.escape(visible_text(km("menu.prompt"))))
    await page.press(menu, km("menu.guidance"))
    origin = await page.expect(r".")
    await page.press(origin, km("country.KH"))
    destination = await page.expect(r".")
    await page.press(destination, km("country.TH"))
    topics = await page.expect(re.escape(visible_text(km("guide.ask_topic"))[:20]))
    await page.socket.close()

    again = await Page(client, page.session, "km").open()  # a reload: the same session id, a new socket
    await again.say(text="ថ្លៃសេវាជ្រើសរើសបុគ្គលិក")  # typed, in Khmer: "recruitment fees"
    answer = await again.expect(r".")
    assert answer["text"] and "<script" not in answer["text"]
    async with core.db.session() as session:
        from sqlmodel import select

        from storage.models import Conversation, User
        user = (await session.exec(select(User).where(User.channel == CHANNEL, User.address == page.session))).one()
        conversation = await session.get(Conversation, user.id)
        assert user.lang == "km" and conversation is not None and conversation.flow is not None, "the same conversation, after a reload"
    assert topics["buttons"], "choices come as buttons"


async def test_what_a_page_closed_before_keeping_it_is_sent_again_when_the_next_page_opens(
        web_chat: tuple[TestClient, WebChat]) -> None:
    client, _ = web_chat
    session = new_session_id()
    page = await Page(client, session, "en").open()
    await page.say(text="/start")
    first = await asyncio.wait_for(page.socket.receive_json(), 45)  # arrived, not yet kept: the page is reloaded
    await page.socket.close()
    again = await Page(client, session, "en").open()
    resent = await asyncio.wait_for(again.socket.receive_json(), 45)
    assert (resent["ref"], resent["text"]) == (first["ref"], first["text"]), "sent again; the page knows it by its ref"


async def test_a_fast_typist_waits_in_their_own_queue_told_once_and_a_flooding_address_is_refused(core: Core) -> None:
    now = [100.0]

    async def later(seconds: float) -> None:  # the queue's wait, on the fake clock
        now[0] += seconds

    chat = WebChat(core.conversations, core.outbox, core.texts, per_address=(1.0, 12), clock=lambda: now[0], sleep=later)
    told: list[str] = []

    async def tell(text: str) -> None:
        told.append(text)

    first, second = new_session_id(), new_session_id()
    answers = [await chat.take(first, "203.0.113.7", {"text": f"hello {n}"}, "en", tell) for n in range(10)]
    assert answers == [None] * 10, "nothing refused: the ninth and tenth waited their turn"
    assert told == [core.texts.get("en", "common.slow_down")], "told once"
    others = [await chat.take(second, "203.0.113.7", {"text": f"hi {n}"}, "en", tell) for n in range(6)]
    assert others[:3] == [None] * 3 and others[3:] == ["too_many"] * 3, \
        f"one address sending more than people could: refused beyond its budget ({others})"


async def test_where_websockets_are_blocked_the_page_sends_by_post_and_long_polls(web_chat: tuple[TestClient, WebChat], core: Core) -> None:
    client, _ = web_chat
    vi = lambda key, **p: core.texts.get("vi", key, **p)  # noqa: E731
    session = new_session_id()
    poll = asyncio.create_task(client.post("/chat/poll", json={"session": session}))
    sent = await client.post("/chat/send", json={"session": session, "lang": "vi", "text": "/start"})
    assert sent.status == 200
    items = (await (await poll).json())["items"]
    assert any(visible_text(vi("language.pick")) in visible_text(i["text"]) for i in items if i["kind"] == "message")
    bad = await client.post("/chat/send", json={"session": "short", "text": "hi"})
    assert bad.status == 400


async def test_the_page_is_small_loads_nothing_from_elsewhere_and_may_be_framed_only_by_listed_sites(
        web_chat: tuple[TestClient, WebChat]) -> None:
    client, _ = web_chat
    total = 0
    for path in ("/", "/chat/app.js", "/chat/app.css"):
        answer = await client.get(path)
        assert answer.status == 200
        body = await answer.read()
        total += len(body)
        assert b"http://" not in body and b"https://fonts" not in body and b"cdn" not in body.lower()
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'self'" in policy
        assert "Set-Cookie" not in answer.headers
    assert total < 100_000, f"page weight {total} bytes"
    texts = await (await client.get("/chat/texts?lang=lo")).json()
    assert texts["lang"] == "lo" and texts["quick_exit"]


# -- in a real browser ---------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Chromium and chromedriver are not installed "
                                    "(apt-get install chromium chromium-driver; .ci/run installs them)")


def browser() -> Any:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must not try to download a driver
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=420,860", "--lang=km"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


class Browser:
    """Selenium is synchronous; the bot serves from this test's event loop, so every browser
    call runs in a thread while the loop goes on serving."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver, self.base = driver, base

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, path: str) -> None:
        await self.run(self.driver.get, self.base + path)

    async def wait_text(self, text: str, timeout: float = 45) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def present(driver: Any) -> bool:
            return text in driver.find_element(By.ID, "log").text

        await self.run(lambda: WebDriverWait(self.driver, timeout).until(present))

    async def press(self, label: str, timeout: float = 45) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def button(driver: Any) -> Any:
            found = [b for b in driver.find_elements(By.CSS_SELECTOR, ".choices button") if b.text == label and b.is_enabled()]
            return found[-1] if found else False

        await self.run(lambda: WebDriverWait(self.driver, timeout).until(button).click())

    async def type(self, text: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        await self.run(lambda: self.driver.find_element(By.ID, "text").send_keys(text + Keys.ENTER))

    async def screenshot(self, name: str) -> None:
        ARTEFACTS.mkdir(exist_ok=True)
        await self.run(self.driver.save_screenshot, str(ARTEFACTS / f"{name}.png"))


@pytest.fixture
async def chromium(web_chat: tuple[TestClient, WebChat]) -> AsyncIterator[Browser]:
    client, _ = web_chat
    driver = await asyncio.to_thread(browser)
    try:
        yield Browser(driver, str(client.make_url("")).rstrip("/"))
    finally:
        await asyncio.to_thread(driver.quit)


@needs_chromium
async def test_in_chromium_a_khmer_speaker_takes_the_guidance_journey_reloads_and_resumes(chromium: Browser, core: Core) -> None:
    km = lambda key, **p: core.texts.get("km", key, **p)  # noqa: E731
    await chromium.open("/chat?lang=km")
    await chromium.wait_text(visible_text(km("language.pick")))
    await chromium.screenshot("km-first-screen")
    await chromium.press(km("language.self_name"))
    await chromium.press(km("menu.guidance"))
    await chromium.press(km("country.KH"))
    await chromium.press(km("country.TH"))
    await chromium.wait_text(visible_text(km("guide.ask_topic"))[:20])
    await chromium.press(km("guide.topic.fees"))
    await chromium.screenshot("km-answer")
    await chromium.run(chromium.driver.refresh)
    await chromium.wait_text(visible_text(km("guide.ask_topic"))[:20])  # the transcript is back after a reload
    await chromium.press(km("common.back_to_menu"))
    await chromium.wait_text(visible_text(km("menu.prompt"))[:20])


@needs_chromium
async def test_in_chromium_a_vietnamese_speaker_reports_a_case_and_quick_exit_leaves_nothing(chromium: Browser, core: Core) -> None:
    vi = lambda key, **p: core.texts.get("vi", key, **p)  # noqa: E731
    await chromium.open("/chat?lang=vi&start=report")
    await chromium.wait_text(visible_text(vi("language.pick")))
    await chromium.screenshot("vi-first-screen")
    await chromium.press(vi("language.self_name"))
    await chromium.press(vi("report.danger.no"))
    await chromium.press(vi("report.category.documents_wages"))
    await chromium.press(vi("country.TH"))
    await chromium.press(vi("province.TH.bangkok"))
    await chromium.press(vi("report.affected.me"))
    await chromium.wait_text(visible_text(vi("report.ask_description"))[:20])
    await chromium.type("Công ty giữ hộ chiếu của tôi <b>không trả lương</b>")
    await chromium.press(vi("report.attachments_done"))
    await chromium.press(vi("report.contact.on_check"))
    await chromium.press(vi("report.consent.yes"))
    await chromium.wait_text(visible_text(vi("report.received", report_code="X")).split("X")[0][:20])
    await chromium.screenshot("vi-answer")
    log = await chromium.run(lambda: chromium.driver.find_element("id", "log").get_attribute("innerHTML"))
    assert "&lt;b&gt;không trả lương&lt;/b&gt;" in log, "what the person typed is shown as text, never as HTML"

    history = await chromium.run(lambda: chromium.driver.execute_script("return history.length"))
    from selenium.webdriver.common.keys import Keys
    await chromium.run(lambda: chromium.driver.find_element("tag name", "body").send_keys(Keys.ESCAPE))
    await chromium.run(lambda: __import__("selenium.webdriver.support.ui", fromlist=["WebDriverWait"]).WebDriverWait(
        chromium.driver, 20).until(lambda d: d.current_url.endswith("/chat/away")))
    page = await chromium.run(lambda: chromium.driver.page_source)
    assert "hộ chiếu" not in page and "SafeRoute" not in page, "a harmless page"
    stored = await chromium.run(lambda: chromium.driver.execute_script(
        "return [localStorage.length, sessionStorage.length, history.length]"))
    assert stored[:2] == [0, 0], "no session id and no transcript left in the browser"
    assert stored[2] == history, "the chat replaced in the history, not added to it"
    await chromium.run(chromium.driver.back)
    still = await chromium.run(lambda: chromium.driver.page_source)
    assert "hộ chiếu" not in still
