"""Broadcast staff and subscribers in chat: the flow actions.

- Subscribers: the one-time offer after a guidance journey (`subscribe_offer`), /subscribe
  with a choice of topics, and /stop, /unsubscribe or the word for "stop" (`unsubscribe`).
- Staff: /grant, /revoke, /invite and invite links (`staff_*` flows); /broadcast to compose
  a campaign (`broadcast`), /campaigns to follow, pause, resume or cancel them (`campaigns`).
  Staff-only actions check the role themselves and refuse everyone else.

What a staff member types while composing stays in the conversation state (encrypted at
rest) under `bc_*` names until the campaign is created or discarded.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel import col, select, update

from bot.engine.events import Button
from bot.engine.i18n import LANGUAGES
from bot.engine.runner import OPEN_FLOW, Action, Turn
from bot.features.broadcasts.scripts import in_its_script, script_name, script_warnings
from bot.features.broadcasts import subscribers
from bot.features.broadcasts.campaigns import BUTTON_FLOWS, DEFAULT_TZ, TOPICS, WEEKDAYS, CampaignError, validate
from bot.features.broadcasts.staff import ROLES, StaffError
from bot.outbox import Outbox
from storage.broadcasts import Campaign
from storage.models import OutboxMessage, User, utcnow

if TYPE_CHECKING:
    from bot.features.broadcasts import BroadcastsFeature

ACTION_NAMES: frozenset[str] = frozenset({
    "broadcasts.offer", "broadcasts.load_topics", "broadcasts.toggle_topic", "broadcasts.subscribe", "broadcasts.unsubscribe",
    "broadcasts.grant", "broadcasts.revoke", "broadcasts.invite", "broadcasts.accept_invite", "broadcasts.follow_language",
    "broadcasts.compose_start", "broadcasts.check_name", "broadcasts.check_text", "broadcasts.check_url", "broadcasts.audience",
    "broadcasts.check_schedule", "broadcasts.preview", "broadcasts.create", "broadcasts.discard",
    "broadcasts.list_campaigns", "broadcasts.pick_campaign", "broadcasts.campaign_action",
})

STATUSES = ("running", "paused", "scheduled", "finished", "cancelled")
ORIGINS = ("KH", "LA", "MM", "TH", "VN")
LIST_LIMIT = 25
NAME_LIMIT = 120
TEXT_LIMIT = 3500

TEXT_KEYS: tuple[str, ...] = (
    "broadcast.script_warning", "broadcast.zero_audience", "broadcast.confirm_empty", "campaigns.by_language", "campaigns.language_line",
    # subscribers
    "subscribe.subscribed", "subscribe.no_topic", "subscribe.nothing", "subscribe.stopped", "subscribe.was_not_subscribed",
    # staff
    "staff.refused", "staff.grant_usage", "staff.revoke_usage", "staff.invite_usage", "staff.unknown_user", "staff.granted",
    "staff.revoked", "staff.not_revoked", "staff.still_admin", "staff.you_got_role", "staff.you_lost_role", "staff.invite_link",
    "staff.invite_accepted", "staff.invite_invalid", "staff.hint.broadcast",
    *(f"staff.role.{role}" for role in ROLES),
    # composing
    "broadcast.bad_name", "broadcast.too_long", "broadcast.no_text", "broadcast.bad_url", "broadcast.bad_at", "broadcast.bad_time",
    "broadcast.bad_tz", "broadcast.in_past", "broadcast.invalid", "broadcast.everyone", "broadcast.aud.langs",
    "broadcast.aud.countries", "broadcast.aud.topics", "broadcast.none_chosen", "broadcast.when.now", "broadcast.when.once",
    "broadcast.when.weekly", "broadcast.preview_intro", "broadcast.preview_lang", "broadcast.preview_not_sent",
    "broadcast.preview_summary", "broadcast.button_none_short", "broadcast.button_link_short", "broadcast.created",
    "broadcast.created_now", *(f"broadcast.language.{lang}" for lang in LANGUAGES),
    # the campaign list
    "campaigns.header", "campaigns.none", "campaigns.line", "campaigns.next_run", "campaigns.eta", "campaigns.not_found",
    "campaigns.usage", "campaigns.paused", "campaigns.resumed", "campaigns.cancelled", "campaigns.cannot", "campaigns.detail",
    *(f"campaigns.status.{status}" for status in STATUSES),
)

_DATE_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2})[:.](\d{2})")
_DATE_DMY = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2})[:.](\d{2})")
_TIME = re.compile(r"(\d{1,2})[:.](\d{2})")


def _escape(value: object) -> str:
    return html.escape(str(value), quote=False)


def _args(turn: Turn) -> list[str]:
    """The words after the command (the engine keeps them in `args` for this turn)."""
    return str(turn.values.pop("args", "") or "").split()


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _local(moment: datetime, tz: str) -> str:
    return moment.astimezone(_zone(tz) or ZoneInfo(DEFAULT_TZ)).strftime("%Y-%m-%d %H:%M")


class ChatActions:
    # audience lists being chosen: (conversation value, allowed codes)
    FIELDS = {"langs": ("bc_langs", LANGUAGES), "countries": ("bc_countries", ORIGINS), "topics": ("bc_topics", TOPICS)}

    def __init__(self, feature: BroadcastsFeature) -> None:
        self.feature = feature
        self.staff = feature.staff
        self.campaigns = feature.campaigns

    def actions(self) -> dict[str, Action]:
        return {name: getattr(self, name.split(".", 1)[1]) for name in ACTION_NAMES}

    # -- subscribers ----------------------------------------------------------------------------

    async def offer(self, turn: Turn) -> str | None:
        """After a guidance journey: ask once. Being asked is recorded now, so an unanswered
        offer does not come back either."""
        if await subscribers.was_asked(turn.session, turn.user):
            return None
        await subscribers.declined(turn.session, turn.user)
        return "offer"

    def _show_topics(self, turn: Turn) -> None:
        chosen = [t for t in TOPICS if t in (turn.values.get("sub_topics") or [])]
        turn.values["sub_chosen"] = ", ".join(turn.text(f"subscribe.topic.{t}") for t in chosen) or turn.text("subscribe.nothing")

    async def load_topics(self, turn: Turn) -> str | None:
        row = await subscribers.subscription(turn.session, turn.user)
        turn.values["sub_topics"] = list(row.topics) if row is not None and row.active and row.topics else list(TOPICS)
        self._show_topics(turn)
        return None

    async def toggle_topic(self, turn: Turn) -> str | None:
        pick = turn.values.pop("sub_pick", None)
        topics = list(turn.values.get("sub_topics") or [])
        if pick in TOPICS:
            topics = [t for t in topics if t != pick] if pick in topics else [*topics, pick]
        turn.values["sub_topics"] = topics
        self._show_topics(turn)
        return None

    async def subscribe(self, turn: Turn) -> str | None:
        topics = [t for t in TOPICS if t in (turn.values.get("sub_topics") or [])]
        if not topics:
            turn.say("subscribe.no_topic")
            return "topics"
        origin = turn.values.get("origin")
        await subscribers.subscribe(turn.session, turn.user, topics=topics, origin=origin if origin in ORIGINS else None)
        turn.say("subscribe.subscribed", topics=turn.values.get("sub_chosen", ""))
        turn.values.pop("sub_topics", None)
        turn.values.pop("sub_chosen", None)
        return None

    async def unsubscribe(self, turn: Turn) -> str | None:
        """Stop at once, including messages of a broadcast already queued for this user."""
        turn.values.pop("args", None)
        was = await subscribers.unsubscribe(turn.session, turn.user)
        await turn.session.exec(
            update(OutboxMessage).where(col(OutboxMessage.channel) == turn.user.channel, col(OutboxMessage.chat) == turn.user.address,  # type: ignore[call-overload]
                                        col(OutboxMessage.batch).like("run:%"), col(OutboxMessage.status).in_(["pending", "held"]))
            .values(status="cancelled"))
        turn.say("subscribe.stopped" if was else "subscribe.was_not_subscribed")
        return None

    # -- staff roles ----------------------------------------------------------------------------

    async def _telegram_user(self, turn: Turn, address: str) -> User | None:
        return (await turn.session.exec(select(User).where(User.channel == turn.user.channel, User.address == address))).first()

    def _role(self, turn: Turn, role: str) -> str:
        return turn.text(f"staff.role.{role}")

    async def _role_change(self, turn: Turn, usage: str) -> tuple[User, str] | None:
        args = _args(turn)
        if not await self.staff.is_admin(turn.session, turn.user):
            turn.say("staff.refused")
            return None
        roles = ", ".join(ROLES)
        if len(args) != 2 or not args[0].isdigit() or args[1].lower() not in ROLES:
            turn.say(usage, roles=roles)
            return None
        target = await self._telegram_user(turn, args[0])
        if target is None:
            turn.say("staff.unknown_user", id=args[0])
            return None
        return target, args[1].lower()

    async def grant(self, turn: Turn) -> str | None:
        found = await self._role_change(turn, "staff.grant_usage")
        if found is None:
            return None
        target, role = found
        await self.staff.grant(turn.session, turn.user, target, role)
        turn.say("staff.granted", id=target.address, role=self._role(turn, role))
        if target.id != turn.user.id:
            self._notify(turn, target, "staff.you_got_role", role)
        return None

    async def follow_language(self, turn: Turn) -> str | None:
        """Staff: their command menu follows the language they just chose."""
        if await self.staff.can_broadcast(turn.session, turn.user):
            await self.staff.update_menu(turn.session, turn.user)
        return None

    async def revoke(self, turn: Turn) -> str | None:
        found = await self._role_change(turn, "staff.revoke_usage")
        if found is None:
            return None
        target, role = found
        removed = await self.staff.revoke(turn.session, turn.user, target, role)
        turn.say("staff.revoked" if removed else "staff.not_revoked", id=target.address, role=self._role(turn, role))
        if role in await self.staff.roles(turn.session, target):
            turn.say("staff.still_admin", id=target.address)
        elif removed and target.id != turn.user.id:
            self._notify(turn, target, "staff.you_lost_role", role)
        return None

    def _notify(self, turn: Turn, target: User, key: str, role: str) -> None:
        """Tell the other user (in their language) that their role changed."""
        texts = self.feature.core.texts
        text = texts.get(target.lang, key, role=texts.get(target.lang, f"staff.role.{role}"))
        if role in ("admin", "campaign") and key == "staff.you_got_role":
            text += "\n\n" + texts.get(target.lang, "staff.hint.broadcast")
        Outbox.add(turn.session, target.channel, target.address, "message", {"text": text})

    async def invite(self, turn: Turn) -> str | None:
        args = _args(turn)
        if not await self.staff.is_admin(turn.session, turn.user):
            turn.say("staff.refused")
            return None
        if len(args) != 1 or args[0].lower() not in ROLES:
            turn.say("staff.invite_usage", roles=", ".join(ROLES))
            return None
        role = args[0].lower()
        token = await self.staff.invite(turn.session, turn.user, role)
        link = self.feature.core.deep_link(turn.event.channel, f"inv_{token}") or f"/start inv_{token}"
        turn.say("staff.invite_link", role=self._role(turn, role), link=_escape(link))
        return None

    async def accept_invite(self, turn: Turn) -> str | None:
        token = str(turn.values.pop("link_arg", "") or "")
        try:
            role = await self.staff.accept(turn.session, turn.user, token)
        except StaffError:
            turn.say("staff.invite_invalid")
            return None
        turn.say("staff.invite_accepted", role=self._role(turn, role))
        if role in ("admin", "campaign"):
            turn.say("staff.hint.broadcast")
        return None

    # -- composing a broadcast ------------------------------------------------------------------

    @staticmethod
    def _clear(turn: Turn) -> None:
        for name in [k for k in turn.values if k.startswith("bc_")]:
            del turn.values[name]

    async def compose_start(self, turn: Turn) -> str | None:
        turn.values.pop("args", None)
        self._clear(turn)
        if not await self.staff.can_broadcast(turn.session, turn.user):
            return "refused"
        return None

    async def check_name(self, turn: Turn) -> str | None:
        name = " ".join(str(turn.values.get("bc_name") or "").split())
        if not name or len(name) > NAME_LIMIT:
            turn.say("broadcast.bad_name", limit=NAME_LIMIT)
            return "ask_name"
        turn.values["bc_name"] = name
        return None

    async def check_text(self, turn: Turn) -> str | None:
        """Validate the text just typed (or skipped), then ask for the next language."""
        lang = str(turn.values.get("bc_cur") or LANGUAGES[0])
        text = str(turn.values.get(f"bc_text_{lang}") or "").strip()
        if len(text) > TEXT_LIMIT:
            turn.say("broadcast.too_long", count=len(text), limit=TEXT_LIMIT)
            return f"text_{lang}"
        turn.values[f"bc_text_{lang}"] = text or None
        if text and not in_its_script(lang, text):  # a warning, not a block: a name or a link may be in Latin letters
            turn.say("broadcast.script_warning", language=turn.text(f"broadcast.language.{lang}"), script=script_name(lang, turn.lang) or "")
        following = LANGUAGES[LANGUAGES.index(lang) + 1:] if lang in LANGUAGES else ()
        if following:
            return f"text_{following[0]}"
        turn.values.pop("bc_cur", None)
        if not self._texts(turn):
            turn.say("broadcast.no_text")
            return f"text_{LANGUAGES[0]}"
        return None

    async def check_url(self, turn: Turn) -> str | None:
        url = str(turn.values.get("bc_url") or "").strip()
        if not re.fullmatch(r"https://[^\s<>\"']+\.[^\s<>\"']+", url) or len(url) > 1000:
            turn.say("broadcast.bad_url")
            return "button_url"
        turn.values["bc_url"], turn.values["bc_button"] = url, None
        return None

    def _names(self, turn: Turn, field: str, codes: list[str]) -> str:
        if field == "langs":
            return ", ".join(turn.text(f"broadcast.language.{c}") for c in codes)
        if field == "countries":
            return ", ".join(turn.text(f"country.{c}") for c in codes)
        return ", ".join(turn.text(f"subscribe.topic.{c}") for c in codes)

    async def audience(self, turn: Turn) -> str | None:
        """Toggle what was just picked into the list being chosen; describe the audience."""
        pick = turn.values.pop("bc_pick", None)
        field = str(turn.values.get("bc_field") or "")
        if field in self.FIELDS and pick is not None:
            name, allowed = self.FIELDS[field]
            chosen = list(turn.values.get(name) or [])
            chosen = [c for c in chosen if c != pick] if pick in chosen else [*chosen, pick]
            turn.values[name] = [c for c in allowed if c in chosen] or None
        if field in self.FIELDS:
            chosen = list(turn.values.get(self.FIELDS[field][0]) or [])
            turn.values["bc_chosen"] = self._names(turn, field, chosen) or turn.text("broadcast.none_chosen")
        turn.values["bc_audience"] = self._describe_audience(turn, self._audience(turn))
        return None

    def _audience(self, turn: Turn) -> dict[str, list[str]]:
        audience = {}
        for key, (name, _) in self.FIELDS.items():
            if turn.values.get(name):
                audience[{"langs": "languages"}.get(key, key)] = list(turn.values[name])
        return audience

    def _describe_audience(self, turn: Turn, audience: dict[str, Any]) -> str:
        parts = [turn.text(f"broadcast.aud.{field}", list=self._names(turn, field, audience[key]))
                 for field, key in (("langs", "languages"), ("countries", "countries"), ("topics", "topics")) if audience.get(key)]
        return "; ".join(parts) or turn.text("broadcast.everyone")

    async def check_schedule(self, turn: Turn) -> str | None:
        kind = turn.values.get("bc_kind")
        if kind == "once":
            schedule = self._parse_at(turn, str(turn.values.get("bc_at") or ""))
            if schedule is None:
                return "ask_at"
        elif kind == "weekly":
            schedule = self._parse_weekly(turn, str(turn.values.get("bc_time") or ""))
            if schedule is None:
                return "ask_time"
        else:
            schedule = {"kind": "now"}
        turn.values["bc_schedule"] = schedule
        return None

    def _tz(self, turn: Turn, rest: str) -> str | None:
        tz = rest.strip() or DEFAULT_TZ
        if _zone(tz) is None or "/" not in tz and tz != "UTC":
            turn.say("broadcast.bad_tz", tz=_escape(tz))
            return None
        return tz

    def _parse_at(self, turn: Turn, text: str) -> dict[str, str] | None:
        text = text.strip()
        iso, dmy = _DATE_ISO.match(text), _DATE_DMY.match(text)
        if iso:
            year, month, day, hour, minute = (int(x) for x in iso.groups())
            rest = text[iso.end():]
        elif dmy:
            day, month, year, hour, minute = (int(x) for x in dmy.groups())
            rest = text[dmy.end():]
        else:
            turn.say("broadcast.bad_at")
            return None
        try:
            local = datetime(year, month, day, hour, minute)
        except ValueError:
            turn.say("broadcast.bad_at")
            return None
        tz = self._tz(turn, rest)
        if tz is None:
            return None
        if local.replace(tzinfo=ZoneInfo(tz)) < utcnow():
            turn.say("broadcast.in_past", at=local.strftime("%Y-%m-%d %H:%M"), tz=tz)
            return None
        return {"kind": "once", "at": local.strftime("%Y-%m-%dT%H:%M"), "tz": tz}

    def _parse_weekly(self, turn: Turn, text: str) -> dict[str, str] | None:
        text = text.strip()
        match = _TIME.match(text)
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            turn.say("broadcast.bad_time")
            return None
        tz = self._tz(turn, text[match.end():])
        if tz is None:
            return None
        weekday = str(turn.values.get("bc_weekday") or "mon")
        return {"kind": "weekly", "weekday": weekday if weekday in WEEKDAYS else "mon",
                "time": f"{int(match.group(1)):02d}:{match.group(2)}", "tz": tz}

    def _describe_schedule(self, turn: Turn, schedule: dict[str, Any]) -> str:
        kind = schedule.get("kind")
        tz = str(schedule.get("tz") or DEFAULT_TZ)
        if kind == "weekly":
            return turn.text("broadcast.when.weekly", weekday=turn.text(f"broadcast.weekday.{schedule['weekday']}"),
                             time=schedule["time"], tz=tz)
        if kind == "once":
            at = datetime.fromisoformat(str(schedule["at"]))
            return turn.text("broadcast.when.once", at=_local(at, tz) if at.tzinfo else at.strftime("%Y-%m-%d %H:%M"), tz=tz)
        return turn.text("broadcast.when.now")

    @staticmethod
    def _texts(turn: Turn) -> dict[str, str]:
        return {lang: str(turn.values[f"bc_text_{lang}"]) for lang in LANGUAGES if turn.values.get(f"bc_text_{lang}")}

    @staticmethod
    def _button(turn: Turn) -> dict[str, str] | None:
        if turn.values.get("bc_url"):
            return {"url": str(turn.values["bc_url"])}
        if turn.values.get("bc_button") in BUTTON_FLOWS:
            return {"flow": str(turn.values["bc_button"])}
        return None

    def _spec(self, turn: Turn) -> dict[str, Any]:
        return {"name": str(turn.values.get("bc_name") or ""), "texts": self._texts(turn), "button": self._button(turn),
                "audience": self._audience(turn), "schedule": dict(turn.values.get("bc_schedule") or {"kind": "now"})}

    def _subscriber_button(self, button: dict[str, str] | None, lang: str) -> list[Button]:
        """The button exactly as the campaign will carry it, labelled in the subscriber's language."""
        texts = self.feature.core.texts
        if not button:
            return []
        if button.get("flow"):
            return [Button(OPEN_FLOW + button["flow"], texts.get(lang, f"broadcast.button.{button['flow']}"))]
        return [Button("", texts.get(lang, "broadcast.button.link"), url=button["url"])]

    async def _matching(self, turn: Turn, spec: dict[str, Any]) -> int:
        """How many subscribers the campaign would reach if it were sent now."""
        probe = Campaign(name=spec["name"], created_by=turn.user.id or 0, texts=spec["texts"], audience=spec["audience"], schedule={})
        return await self.campaigns.reach(turn.session, probe)

    async def preview(self, turn: Turn) -> str | None:
        spec = self._spec(turn)
        try:
            validate(spec["name"], spec["texts"], spec["button"], spec["audience"], spec["schedule"], utcnow())
        except CampaignError as exc:
            turn.say("broadcast.invalid", error=_escape(exc))
            return "schedule"
        turn.say("broadcast.preview_intro", name=_escape(spec["name"]))
        skipped = []
        for lang in LANGUAGES:
            text = spec["texts"].get(lang)
            if not text:
                skipped.append(turn.text(f"broadcast.language.{lang}"))
                continue
            turn.say("broadcast.preview_lang", language=turn.text(f"broadcast.language.{lang}"))
            turn.flush()
            turn.say_html(html.escape(text.strip(), quote=False))  # as Campaigns sends it
            turn.flush(self._subscriber_button(spec["button"], lang), 1)
        if skipped:
            turn.say("broadcast.preview_not_sent", languages=", ".join(skipped))
        button = spec["button"]
        button_text = (turn.text("broadcast.button_none_short") if not button
                       else turn.text(f"broadcast.button.{button['flow']}") if button.get("flow")
                       else turn.text("broadcast.button_link_short", url=_escape(button["url"])))
        count = await self._matching(turn, spec)
        turn.say("broadcast.preview_summary", audience=self._describe_audience(turn, spec["audience"]),
                 schedule=self._describe_schedule(turn, spec["schedule"]), button=button_text, count=count)
        for lang, script in script_warnings(spec["texts"], turn.lang):
            turn.say("broadcast.script_warning", language=turn.text(f"broadcast.language.{lang}"), script=script)
        return "confirm_empty" if count == 0 else None

    async def create(self, turn: Turn) -> str | None:
        if not await self.staff.can_broadcast(turn.session, turn.user):
            self._clear(turn)
            turn.say("staff.refused")
            return None
        spec = self._spec(turn)
        try:
            campaign = await self.campaigns.create(turn.session, turn.user, paid=self.feature.core.settings.paid_broadcast, **spec)
        except CampaignError as exc:
            turn.say("broadcast.invalid", error=_escape(exc))
            return "schedule"
        self.staff.audit(turn.session, turn.user, "campaign_create", f"campaign:{campaign.id}")
        self._clear(turn)
        when = self._describe_schedule(turn, spec["schedule"])
        turn.say("broadcast.created_now" if spec["schedule"].get("kind") == "now" else "broadcast.created",
                 id=campaign.id, name=_escape(campaign.name), when=when)
        return None

    async def discard(self, turn: Turn) -> str | None:
        self._clear(turn)
        return None

    # -- following and steering campaigns ----------------------------------------------------------

    async def _line(self, turn: Turn, campaign: Campaign, key: str = "campaigns.line") -> str:
        now = utcnow()
        progress = await self.campaigns.progress(turn.session, campaign, now)
        tz = str(campaign.schedule.get("tz") or DEFAULT_TZ)
        line = turn.text(key, id=campaign.id, name=_escape(campaign.name), status=turn.text(f"campaigns.status.{campaign.status}"),
                         schedule=self._describe_schedule(turn, campaign.schedule), sent=progress.sent,
                         failed=progress.failed, blocked=progress.blocked, remaining=progress.remaining)
        if progress.finish_eta is not None:
            line += "\n" + turn.text("campaigns.eta", time=_local(progress.finish_eta, tz), tz=tz)
        if progress.next_run is not None and campaign.status == "scheduled":
            line += "\n" + turn.text("campaigns.next_run", time=_local(progress.next_run, tz), tz=tz)
        return line

    async def list_campaigns(self, turn: Turn) -> str | None:
        args = _args(turn)
        for name in ("cm_pick", "cm_id", "cm_status", "cm_do"):
            turn.values.pop(name, None)
        if not await self.staff.can_broadcast(turn.session, turn.user):
            return "refused"
        if args:
            if len(args) == 2 and args[0].lower() in ("pause", "resume", "cancel") and args[1].lstrip("#").isdigit():
                await self._apply(turn, int(args[1].lstrip("#")), args[0].lower())
            else:
                turn.say("campaigns.usage")
            return "done"
        rows = (await turn.session.exec(select(Campaign).order_by(col(Campaign.id).desc()).limit(LIST_LIMIT))).all()
        if not rows:
            turn.say("campaigns.none")
            return "done"
        rows = sorted(rows, key=lambda c: (STATUSES.index(c.status) if c.status in STATUSES else len(STATUSES), -(c.id or 0)))
        lines = [await self._line(turn, campaign) for campaign in rows]
        turn.say_html(turn.text("campaigns.header") + "\n\n" + "\n\n".join(lines))
        return None

    async def pick_campaign(self, turn: Turn) -> str | None:
        words = str(turn.values.pop("cm_pick", "") or "").split()
        if not await self.staff.can_broadcast(turn.session, turn.user):
            return "refused"
        if len(words) == 2 and words[0].lower() in ("pause", "resume", "cancel") and words[1].lstrip("#").isdigit():
            await self._apply(turn, int(words[1].lstrip("#")), words[0].lower())  # typed as on the command line
            return "done"
        picked = " ".join(words).lstrip("#")
        campaign = await turn.session.get(Campaign, int(picked)) if picked.isdigit() and len(picked) < 12 else None
        if campaign is None:
            turn.say("campaigns.not_found", id=_escape(picked))
            return "pick"
        turn.values["cm_id"], turn.values["cm_status"] = campaign.id, campaign.status
        detail = await self._line(turn, campaign, "campaigns.detail")
        figures = await self.campaigns.figures(turn.session, campaign)
        if figures:
            detail += "\n\n" + turn.text("campaigns.by_language") + "\n" + "\n".join(
                turn.text("campaigns.language_line", language=turn.text(f"broadcast.language.{lang}"), **f) for lang, f in figures.items())
        turn.say_html(detail)
        return None

    async def campaign_action(self, turn: Turn) -> str | None:
        campaign_id, action = turn.values.pop("cm_id", None), turn.values.pop("cm_do", None)
        turn.values.pop("cm_status", None)
        if not await self.staff.can_broadcast(turn.session, turn.user):
            turn.say("staff.refused")
            return None
        if isinstance(campaign_id, int) and action in ("pause", "resume", "cancel"):
            await self._apply(turn, campaign_id, str(action))
        return None

    async def _apply(self, turn: Turn, campaign_id: int, action: str) -> None:
        campaign = await turn.session.get(Campaign, campaign_id)
        if campaign is None:
            turn.say("campaigns.not_found", id=campaign_id)
            return
        allowed = {"pause": ("scheduled", "running"), "resume": ("paused",), "cancel": ("scheduled", "running", "paused")}[action]
        if campaign.status not in allowed:
            turn.say("campaigns.cannot", id=campaign.id, status=turn.text(f"campaigns.status.{campaign.status}"))
            return
        await self.campaigns.set_status(turn.session, campaign, action)
        self.staff.audit(turn.session, turn.user, f"campaign_{action}", f"campaign:{campaign.id}")
        done = {"pause": "campaigns.paused", "resume": "campaigns.resumed", "cancel": "campaigns.cancelled"}[action]
        turn.say(done, id=campaign.id, name=_escape(campaign.name))


def actions(feature: BroadcastsFeature) -> dict[str, Action]:
    return ChatActions(feature).actions()
