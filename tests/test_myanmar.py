"""Burmese typed in Zawgyi is read as Unicode before anything is matched or stored, and the
person is told once how to switch their keyboard. Real Zawgyi strings, with their Unicode
forms written out (not produced by the converter under test)."""

from __future__ import annotations

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
