"""Burmese typed in Zawgyi is read as Unicode before anything is matched or stored, and the
person is told once how to switch their keyboard. Real Zawgyi strings, with their Unicode
forms written out (not produced by the converter under test)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlmodel import select

from bot.app import Core
from bot.engine.events import Event, Message
from bot.engine.myanmar import is_zawgyi, to_unicode
from storage.models import Conversation, User

PAIRS = [
    ("ျမန္မာ", "မြန်မာ"),  # Myanmar
    ("အလုပ္", "အလုပ်"),  # work
    ("ေက်းဇူးတင္ပါတယ္", "ကျေးဇူးတင်ပါတယ်"),  # thank you
    ("ထိုင္းႏိုင္ငံမွာ အလုပ္လုပ္ခ်င္တယ္", "ထိုင်းနိုင်ငံမှာ အလုပ်လုပ်ချင်တယ်"),  # I want to work in Thailand
    ("ပတ္စ္ပို႔ကို ယူထားတယ္", "ပတ်စ်ပို့ကို ယူထားတယ်"),  # they took the passport
]


@pytest.mark.parametrize(("zawgyi", "unicode"), PAIRS)
def test_zawgyi_is_detected_and_read_as_unicode(zawgyi: str, unicode: str) -> None:
    assert is_zawgyi(zawgyi) and not is_zawgyi(unicode)
    assert to_unicode(zawgyi) == (unicode, True)
    assert to_unicode(unicode) == (unicode, False), "Unicode stays as it is"


@pytest.mark.parametrize("text", ["ကူညီပါ", "help", "ជួយខ្ញុំផង", "ช่วยด้วย", ""])
def test_text_that_is_not_zawgyi_is_left_alone(text: str) -> None:
    assert to_unicode(text) == (text, False)


async def test_a_report_typed_in_zawgyi_is_stored_in_unicode_and_the_tip_comes_once(core: Core) -> None:
    async def say(text: str) -> str:
        outputs = await core.conversations.handle(Event("terminal", "mm-1", client_lang="en", text=text))
        return "\n".join(o.text for o in outputs if isinstance(o, Message))

    await core.conversations.handle(Event("terminal", "mm-1", client_lang="en", command="start"))
    first = await say("ပတ္စ္ပို႔ကို ယူထားတယ္")
    assert "Zawgyi" in first and "Unicode" in first
    second = await say("အလုပ္လုပ္ခ်င္တယ္")
    assert "Zawgyi" not in second, "told once"
    async with core.db.session() as session:
        user = (await session.exec(select(User).where(User.address == "mm-1"))).one()
        conversation = await session.get(Conversation, user.id)
        assert conversation is not None and conversation.vars.get("_zawgyi_told") is True


def test_check_refuses_a_burmese_text_in_zawgyi_or_in_another_script() -> None:
    from bot.check import script_problem

    assert script_problem("my", "ေက်းဇူးတင္ပါတယ္၊ ကူညီေပးပါမယ္") is not None, "Zawgyi"
    assert script_problem("my", "Thank you, we will help you") is not None, "English left untranslated"
    assert script_problem("my", "ကျေးဇူးတင်ပါတယ်၊ ကူညီပေးပါမယ်။ {code} ကို /status နဲ့ ကြည့်ပါ") is None


# Typed on a Zawgyi phone (Zawgyi byte sequences, written out here):
WANT_TO_WORK_IN_THAILAND_FROM_MYANMAR = "ျမန္မာကေန ထိုင္းမွာ အလုပ္သြားလုပ္ခ်င္တယ္"
AGENT_KEPT_MY_PASSPORT_NO_WAGES = "ပြဲစားက ပတ္စ္ပို႔ကို ယူထားတယ္၊ လစာလည္း မေပးဘူး"
AGENT_KEPT_MY_PASSPORT_NO_WAGES_UNICODE = "ပွဲစားက ပတ်စ်ပို့ကို ယူထားတယ်၊ လစာလည်း မပေးဘူး"


async def test_a_burmese_speaker_typing_zawgyi_on_telegram_walks_guidance_and_reports_and_is_understood(running_bot: Any) -> None:
    from sqlmodel import select as select_

    from storage.reports import Report
    from tests.fakes.bot_api import visible_text
    from tests.test_reports import BANGKOK, in_group, partner_groups

    fake, texts, core = running_bot.fake, running_bot.core.texts, running_bot.core
    my = lambda key, **p: texts.get("my", key, **p)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(6701, "my")
    await user.start_in(texts, "my")
    newcomer = running_bot.user(6702, "my")
    await newcomer.send("/start")
    picker = await newcomer.expect(re.escape(my("language.pick")))
    assert picker.labels[0] == "မြန်မာ", "a phone set to Burmese sees Burmese first"

    await user.send(WANT_TO_WORK_IN_THAILAND_FROM_MYANMAR)  # understood: guidance, from Myanmar to Thailand
    tip = await user.expect("Zawgyi")
    async with core.db.session() as session:
        from storage.models import Conversation, User
        person = (await session.exec(select_(User).where(User.address == "6701"))).one()
        conversation = await session.get(Conversation, person.id)
        assert conversation is not None and conversation.flow == "guidance"
        assert (conversation.vars.get("origin"), conversation.vars.get("destination")) == ("MM", "TH")
    assert my("guide.ask_origin") in "\n".join(m.text for m in fake.bot_messages(6701)), "the guidance journey opened"
    await user.press(my("country.MM"))
    await user.press(my("country.TH"))
    topics = await user.expect(re.escape(my("guide.ask_topic")))
    await user.press(my("guide.topic.fees"), topics)
    await user.expect(re.escape(my("guide.ask_topic")))

    await user.send("/report")
    await user.press(my("report.danger.no"))
    await user.press(my("report.category.documents_wages"))
    await user.press(my("country.TH"))
    await user.press(my("province.TH.bangkok"))
    await user.press(my("report.affected.me"))
    await user.expect(re.escape(visible_text(my("report.ask_description"))[:20]))
    await user.send(AGENT_KEPT_MY_PASSPORT_NO_WAGES)
    await user.press(my("report.attachments_done"))
    await user.press(my("report.contact.on_check"))
    await user.press(my("report.consent.yes"))
    received = await user.expect(r"\b[A-Z0-9]{6}\b")
    code = re.search(r"\b([A-Z0-9]{6})\b", received.text).group(1)  # type: ignore[union-attr]
    card = await in_group(fake, BANGKOK, code)
    assert AGENT_KEPT_MY_PASSPORT_NO_WAGES_UNICODE in card.text, "the partner reads the words in Unicode"
    assert "Reporter's language: မြန်မာ" in card.text
    async with core.db.session() as session:
        report = (await session.exec(select_(Report).where(Report.code == code))).one()
        assert report.lang == "my" and report.content["description"] == AGENT_KEPT_MY_PASSPORT_NO_WAGES_UNICODE

    said = [m.text for m in fake.bot_messages(6701)]
    assert sum("Zawgyi" in text for text in said) == 1, "told once"
    assert tip.text
    zawgyi = [text[:40] for text in said if is_zawgyi(text)]
    assert not zawgyi, f"the bot wrote Zawgyi: {zawgyi}"


async def test_on_the_terminal_a_zawgyi_phrase_opens_guidance_from_myanmar_to_thailand(core: Core) -> None:
    from bot.channels.terminal import TerminalChat
    import io

    out = io.StringIO()
    chat = TerminalChat(core.conversations, core.outbox, core.texts, user="mm-terminal", lang="my", out=out)
    async with core.db.transaction() as session:
        await core.engine.set_language(session, "terminal", "mm-terminal", "my")
    await chat.send(WANT_TO_WORK_IN_THAILAND_FROM_MYANMAR)
    assert core.texts.get("my", "guide.ask_origin") in out.getvalue(), "understood: the guidance journey opens"
    await chat.send(str(chat.buttons.index(next(b for b in chat.buttons if b.label == core.texts.get("my", "country.MM"))) + 1))
    await chat.send(str(chat.buttons.index(next(b for b in chat.buttons if b.label == core.texts.get("my", "country.TH"))) + 1))
    shown = out.getvalue()
    assert core.texts.get("my", "guide.ask_topic") in shown, shown[-300:]
    assert "Zawgyi" in shown
    assert not is_zawgyi(shown.replace("Zawgyi", ""))
