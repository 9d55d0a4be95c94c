"""Logs cannot leak: a whole report journey, a caseworker's question and the reporter's
answer run with every logger at DEBUG; what the configured handlers write holds none of
the person's words, phone number, Telegram id or name, nor the bot token. The same run
without the filter shows that DEBUG output does carry them, so the check can fail."""

from __future__ import annotations

import io
import json
import logging
import re

from bot.logs import JsonFormatter, Redactor
from tests.conftest import RunningBot
from tests.test_reports import BANGKOK, CASEWORKER, in_group, partner_groups, report_until_consent

REPORTER = 7_123_456_789
WORDS = "Ông chủ giữ hộ chiếu của tôi ở Samut Sakhon"
PHONE = "+66 81 234 5678"
ANSWER = "Tôi ở ký túc xá số 3"


async def test_nothing_a_person_said_or_is_reaches_the_logs_at_debug(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    vi = lambda key, **p: texts.get("vi", key, **p)  # noqa: E731
    filtered, raw, as_json = io.StringIO(), io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(raw), logging.StreamHandler(filtered), logging.StreamHandler(as_json)]  # the raw copy first
    handlers[1].addFilter(Redactor())
    handlers[2].addFilter(Redactor())
    handlers[2].setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        handler.setLevel(logging.DEBUG)
    root.handlers.insert(0, handlers[0])  # before any redacting handler, which rewrites the records it sees
    root.addHandler(handlers[1])
    root.addHandler(handlers[2])
    try:
        partner_groups(fake)
        user = running_bot.user(REPORTER, "vi")
        fake.users[REPORTER].first_name = "Nguyễn Thị Lan"
        await user.start_in(texts, "vi")
        await report_until_consent(user, vi, category="documents_wages", danger=False, country="TH", province="samut_sakhon",
                                   description=WORDS, contact="phone")
        await user.expect(re.escape(vi("report.ask_phone")[:20]))
        await user.send(PHONE)
        await user.press(vi("report.consent.yes"))
        received = await user.expect(re.escape(vi("report.received", report_code="X")[:15]))
        code = re.search(r"\b([A-Z0-9]{6})\b", received.text).group(1)  # type: ignore[union-attr]
        await in_group(fake, BANGKOK, code)
        await user.send(ANSWER)
        await user.expect(".")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(old_level)

    secrets = [WORDS, "giữ hộ chiếu", PHONE, "81 234 5678", str(REPORTER), "Nguyễn Thị Lan", ANSWER, fake.token, fake.token.split(":")[1]]
    written = filtered.getvalue()
    assert len(written) > 10_000, "DEBUG logging was on"
    assert any(secret in raw.getvalue() for secret in secrets), "without the filter DEBUG output does carry them"
    leaked = [secret for secret in secrets if secret in written]
    assert not leaked, f"leaked into the logs: {leaked}"

    # LOG_FORMAT=json: one object per line, each with an event key; what happens while an
    # update is handled names the update, so one update can be followed through.
    lines = [json.loads(line) for line in as_json.getvalue().splitlines() if line.startswith("{")]
    assert len(lines) > 100 and all(line["event"] and line["level"] for line in lines)
    followed = {line["update"] for line in lines if "update" in line}
    assert len(followed) >= 5, "the updates of the journey can each be followed"
    leaked = [secret for secret in secrets if secret in as_json.getvalue() or json.dumps(secret)[1:-1] in as_json.getvalue()]
    assert not leaked, f"leaked into the JSON logs: {leaked}"
