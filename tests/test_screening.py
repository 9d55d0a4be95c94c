"""The red-flag check of a job offer, the forced-labour self-screening and the scam-compound
warning: scoring as data, every raised flag explained with its sources, nothing kept."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.app import Core
from bot.check import check_project, format_report
from bot.engine.content import load_content
from bot.engine.flows import load_flows
from bot.features.screening.data import RedFlags, load_redflags, load_selfcheck, score
from bot.settings import PROJECT_ROOT
from storage.models import Conversation, User
from storage.reports import Report
from tests.conftest import RunningBot
from tests.fakes.bot_api import visible_text
from tests.story import TelegramUser

THAI = re.compile(r"[\u0e00-\u0e7f]")
LAO = re.compile(r"[\u0e80-\u0eff]")


def shipped_redflags() -> RedFlags:
    flows_dir = PROJECT_ROOT / "flows"
    redflags, problems = load_redflags(flows_dir, load_content(flows_dir), load_flows(flows_dir))
    assert problems == [], problems
    return redflags


async def values_of(core: Core, user_id: int) -> dict[str, Any]:
    async with core.db.session() as session:
        user = (await session.exec(select(User).where(User.channel == "telegram", User.address == str(user_id)))).one()
        conversation = await session.get(Conversation, user.id)
        return dict(conversation.vars) if conversation else {}


# -- scoring -----------------------------------------------------------------------------------


def test_the_shipped_weights_and_levels_are_as_documented() -> None:
    redflags = shipped_redflags()
    weights = {q.id: q.weight for q in redflags.questions}
    assert len(weights) == 10
    assert (redflags.medium, redflags.high, redflags.not_sure_factor) == (2, 5, 0.5)
    assert {q for q, w in weights.items() if w >= redflags.high} == {"passport", "tourist_visa", "back_route", "cut_off"}, \
        "each of these alone makes an offer high risk"
    assert all(w >= redflags.medium for w in weights.values()), "any single yes is at least medium"
    assert {q.id: q.flags for q in redflags.questions}["passport"] == ["RF-5"]
    assert {q.id: q.flags for q in redflags.questions}["fees"] == ["RF-8"]


@pytest.mark.parametrize(("answers", "level"), [
    ({}, "low"),
    ({q: "no" for q in ("social_media", "easy_job", "passport", "fees")}, "low"),
    ({"social_media": "yes"}, "medium"),
    ({"fees": "yes"}, "medium"),
    ({"social_media": "yes", "easy_job": "yes"}, "medium"),  # 4
    ({"fees": "yes", "social_media": "yes"}, "high"),  # 5: two signs together
    ({"passport": "yes"}, "high"),
    ({"passport": "yes", "fees": "yes"}, "high"),
    ({"contract": "unsure"}, "low"),  # 1
    ({"contract": "unsure", "vague_job": "unsure"}, "medium"),  # 2
    ({"tourist_visa": "unsure"}, "medium"),  # 2.5
    ({"tourist_visa": "unsure", "back_route": "unsure"}, "high"),  # 5
])
def test_scoring_follows_the_weights(answers: dict[str, str], level: str) -> None:
    assert score(shipped_redflags(), answers).level == level


def test_a_score_lists_the_raised_and_the_unsure_flags_in_order() -> None:
    result = score(shipped_redflags(), {"passport": "yes", "fees": "yes", "contract": "unsure", "debt": "no"})
    assert result.score == 3 + 5 + 1
    assert result.flags == ["RF-8", "RF-5"]
    assert [q.id for q in result.unsure] == ["contract"]


def test_the_data_is_checked_with_file_and_line(tmp_path: Path) -> None:
    flows, locales = tmp_path / "flows", tmp_path / "locales"
    shutil.copytree(PROJECT_ROOT / "flows", flows)
    shutil.copytree(PROJECT_ROOT / "locales", locales)
    data = flows / "data" / "redflags.yaml"
    text = data.read_text(encoding="utf-8")
    text = text.replace("facts: [rf_passport]\n    weight: 5", "facts: [rf_kept_papers]\n    weight: heavy", 1)
    text = text.replace("levels: {medium: 2, high: 5}", "levels: {medium: 6, high: 5}", 1)
    data.write_text(text, encoding="utf-8")
    report = check_project(flows, locales)
    problems = [p for p in report.problems if p.path == data]
    passport_line = next(i for i, line in enumerate(text.splitlines(), 1) if "id: passport" in line)
    assert any(p.line == passport_line and "fact 'rf_kept_papers' is not in facts.yaml" in p.message for p in problems), format_report(report)
    assert any("'weight' must be a number" in p.message for p in problems)
    assert any("need 0 < medium < high" in p.message for p in problems)


def test_every_selfcheck_indicator_is_asked_and_named() -> None:
    flows_dir = PROJECT_ROOT / "flows"
    selfcheck, problems = load_selfcheck(flows_dir, load_content(flows_dir), load_flows(flows_dir))
    assert problems == []
    assert sorted(int(i.id.split("-")[1]) for i in selfcheck.indicators) == list(range(1, 12)), "all 11 ILO indicators"


# -- the journeys ------------------------------------------------------------------------------


async def answer(user: TelegramUser, yes_label: str, no_label: str, questions: list[str], yes: set[str]) -> None:
    for question in questions:
        await user.expect(re.escape(question))
        await user.press(yes_label if question in yes else no_label)


async def test_a_thai_speakers_offer_with_a_kept_passport_and_high_fees_is_high_risk(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    th = lambda key, **p: t.get("th", key, **p)  # noqa: E731
    redflags = shipped_redflags()
    user = running_bot.user(6201, "th")
    await user.start_in(t, "th")

    await user.press(th("menu.redflags"))
    await user.expect(re.escape(th("redflags.intro")))
    await user.press(th("country.TH"))
    await user.press(th("country.KR"))
    questions = [th(q.text) for q in redflags.questions]
    await answer(user, th("redflags.yes"), th("redflags.no"), questions, {th("redflags.q.passport"), th("redflags.q.fees")})

    offer = await user.expect(re.escape(th("redflags.next")))  # the result ends with what to do next
    shown = user.all_text()
    shown = shown[shown.index(visible_text(th("redflags.level.high"))):]
    assert THAI.search(shown)
    named = lambda *ids: all(name in shown for name in user.named_sources(running_bot.core.content, *ids))  # noqa: E731
    assert visible_text(th("fact.rf_passport")) in shown and named("D-ILO-1"), "the passport flag, explained with its source"
    assert visible_text(th("fact.rf_fees")) in shown and named("D-CAFEF-1"), "the fees flag, explained with its source"
    assert visible_text(th("fact.ilo_employer_pays")) in shown, "what the rules say about fees"
    assert visible_text(th("fact.rf_social_media")) not in shown, "only the flags that were raised"
    assert visible_text(th("redflags.todo.high")) in shown, "what to do"
    assert visible_text(th("hotlines.header", country=th("country.TH"))) in shown
    assert "1506" in shown, "the hotline: Thais can check a job abroad on 1506, press 2"
    assert th("redflags.report") in offer.labels and th("redflags.more_numbers") in offer.labels

    values = await values_of(running_bot.core, 6201)
    assert not any(k.startswith("rf_") and k not in ("rf_level", "rf_raised") for k in values), values
    await user.press(th("redflags.report"))
    await user.expect(re.escape(th("report.ask_danger")))
    values = await values_of(running_bot.core, 6201)
    assert values["category"] == "recruitment_fraud"
    assert values["screening_summary"] == ["RF-8", "RF-5"], "only the ids of the raised flags go with the report"
    assert "rf_raised" not in values and "rf_level" not in values


async def test_a_low_risk_offer_gets_advice_but_no_report_button(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    en = lambda key, **p: t.get("en", key, **p)  # noqa: E731
    user = running_bot.user(6202, "en")
    await user.start_in(t, "en")
    await user.send("/redflags")
    await user.press(en("country.KH"))
    await user.press(en("country.TH"))
    questions = [en(q.text) for q in shipped_redflags().questions]
    await answer(user, en("redflags.yes"), en("redflags.no"), questions, set())
    result = await user.expect(re.escape(visible_text(en("redflags.level.low"))))
    assert visible_text(en("redflags.todo.low")) in result.text
    assert en("redflags.report") not in result.labels, "the report is offered for a high risk"
    assert en("menu.scam") in result.labels and en("menu.agency") in result.labels, "the scam warning is one tap away"


async def test_a_fake_online_job_offer_leads_to_the_scam_warning(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    vi = lambda key, **p: t.get("vi", key, **p)  # noqa: E731
    user = running_bot.user(6203, "vi")
    await user.start_in(t, "vi")
    await user.send("/redflags")
    await user.press(vi("country.VN"))
    await user.press(vi("redflags.other_destination"))
    for question in shipped_redflags().questions:
        await user.expect(re.escape(vi(question.text)))
        choice = {"social_media": "redflags.yes", "contract": "redflags.unsure"}.get(question.id, "redflags.no")
        await user.press(vi(choice))
    result = await user.expect(re.escape(visible_text(vi("redflags.level.medium"))))  # 2 + 0.5 × 2 = 3
    assert vi("redflags.q.contract") in result.text, "a question answered 'not sure' is listed to find out"
    await user.press(vi("menu.scam"))
    warning = await user.expect(re.escape(visible_text(vi("scam.intro"))[:30]))
    assert visible_text(vi("fact.scam_sites"))[:40] in warning.text
    assert all(name in warning.text for name in user.named_sources(running_bot.core.content, "D-APF-1"))


async def test_the_scam_warning_opens_from_a_campaign_link_and_from_the_menu(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    km = lambda key, **p: t.get("km", key, **p)  # noqa: E731
    user = running_bot.user(6204, "km")
    await user.send("/start scam")
    await user.press(km("language.self_name"))
    warning = await user.expect(re.escape(visible_text(km("scam.intro"))[:30]))
    await running_bot.fake.wait_for(lambda: running_bot.fake.sent_to(6204)[-1].labels)  # the explainer has arrived whole
    for fact in ("rf_easy_job", "scam_scale", "rf_ransom", "victims_not_criminals"):
        assert visible_text(km(f"fact.{fact}"))[:30] in user.all_text()
    assert all(name in user.all_text() for name in user.named_sources(running_bot.core.content, "D-REUT-1", "D-TGT-1")), \
        "every fact carries its source"
    assert km("scam.report") in next(m for m in reversed(running_bot.fake.sent_to(6204)) if m.labels).labels

    await user.send("/menu")
    await user.press(km("menu.scam"))
    again = await user.expect(re.escape(visible_text(km("scam.intro"))[:30]))
    assert again.message_id > warning.message_id


async def test_the_self_screening_ends_with_help_and_stores_nothing(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    lo = lambda key, **p: t.get("lo", key, **p)  # noqa: E731
    user = running_bot.user(6205, "lo")
    await user.start_in(t, "lo")

    await user.press(lo("menu.selfcheck"))
    names = ["deception", "wages", "debt", "documents", "movement", "isolation", "threats", "violence", "overtime", "conditions",
             "vulnerability"]
    first = await user.expect(re.escape(lo("selfcheck.q.deception")))
    assert lo("selfcheck.intro") in first.text and LAO.search(first.text)
    assert lo("common.quick_exit") in first.labels, "a quick exit on every question"
    during = await values_of(running_bot.core, 6205)
    assert not any(k in during for k in ("name", "phone", "place", "country")), "no question about who or where"
    for name in names:
        if name != "deception":
            await user.expect(re.escape(lo(f"selfcheck.q.{name}")))
        await user.press(lo("redflags.yes") if name in ("wages", "documents") else lo("redflags.no"))

    result = await user.expect(re.escape(lo("selfcheck.result.some", count=2)))
    assert lo("selfcheck.ind.wages") in result.text and lo("selfcheck.ind.documents") in result.text
    assert lo("selfcheck.ind.violence") not in result.text
    assert all(name in result.text for name in user.named_sources(running_bot.core.content, "D-ILO-1")), "the ILO indicators carry their source"
    await running_bot.fake.wait_for(lambda: running_bot.fake.sent_to(6205)[-1].labels)
    after = user.all_text()[user.all_text().index(result.text):]
    assert lo("selfcheck.help") in after and visible_text(lo("fact.mrc_help"))[:30] in after, "it ends with help"
    with_buttons = next(m for m in reversed(running_bot.fake.sent_to(6205)) if m.labels)
    assert lo("selfcheck.numbers") in with_buttons.labels and lo("selfcheck.report") in with_buttons.labels

    values = await values_of(running_bot.core, 6205)
    assert not any(k.startswith("sc_") and k != "sc_yes" for k in values), "the answers are gone once the result is shown"
    assert values.get("sc_yes") == ["ILO-8", "ILO-7"], "only which indicators, until the person chooses what to do"

    await user.press(lo("selfcheck.numbers"))
    await user.expect(re.escape(lo("hotlines.pick_country")))
    values = await values_of(running_bot.core, 6205)
    assert not any(k.startswith("sc_") or k == "screening_summary" for k in values), values
    async with running_bot.core.db.session() as session:
        assert (await session.exec(select(Report))).all() == [], "nothing was reported or kept"


async def test_going_on_to_report_from_the_self_screening_sends_only_the_indicator_ids(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    en = lambda key, **p: t.get("en", key, **p)  # noqa: E731
    user = running_bot.user(6206, "en")
    await user.start_in(t, "en")
    await user.send("/selfcheck")
    for name in ["deception", "wages", "debt", "documents", "movement", "isolation", "threats", "violence", "overtime", "conditions",
                 "vulnerability"]:
        await user.expect(re.escape(en(f"selfcheck.q.{name}")))
        await user.press(en("redflags.yes") if name in ("movement", "threats") else en("redflags.unsure"))
    await user.expect(re.escape(en("selfcheck.result.some", count=2)))
    await user.press(en("selfcheck.report"))
    await user.press(en("report.danger.no"), await user.expect(re.escape(en("report.ask_danger"))))
    await user.expect(re.escape(en("report.ask_category")))
    values = await values_of(running_bot.core, 6206)
    assert values["screening_summary"] == ["ILO-3", "ILO-6"]
    assert not any(k.startswith("sc_") for k in values), values


async def test_a_quick_exit_in_the_self_screening_removes_the_messages_and_the_answers(running_bot: RunningBot) -> None:
    fake, t = running_bot.fake, running_bot.core.texts
    th = lambda key, **p: t.get("th", key, **p)  # noqa: E731
    user = running_bot.user(6207, "th")
    await user.start_in(t, "th")
    before = max(m.message_id for m in fake.messages[6207])

    await user.send("/selfcheck")
    await user.expect(re.escape(th("selfcheck.q.deception")))
    await user.press(th("redflags.yes"))
    asking = await user.expect(re.escape(th("selfcheck.q.wages")))
    await user.press(th("common.quick_exit"), asking)
    cover = await user.expect(re.escape(th("quick_exit.cover")))

    await fake.wait_for(lambda: all(m.deleted for m in fake.messages[6207] if before < m.message_id < cover.message_id))
    assert [m for m in fake.messages[6207] if not m.deleted and m.message_id > before] == [cover]
    values = await values_of(running_bot.core, 6207)
    assert not any(k.startswith("sc_") for k in values), values
