"""The bot's HTTP server: campaign endpoints for staff (a bearer token each), and, open,
/healthz, /readyz and Prometheus /metrics. Bad input gets a 4xx that says what is wrong."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bot import metrics
from bot.features.broadcasts import BroadcastsFeature
from bot.features.broadcasts.campaigns import CampaignError, validate
from bot.features.broadcasts.scripts import script_warnings
from bot.features.reports.case_api import PARTNER, CaseReader, partner_for_token
from bot.features.reports.case_api import routes as case_routes
from storage.broadcasts import Campaign
from storage.db import head_revision, schema_revision
from storage.models import User, utcnow

log = logging.getLogger(__name__)

FEATURE = web.AppKey("broadcasts", BroadcastsFeature)
STAFF = web.RequestKey("staff_user", User)
SPEC = Path(__file__).with_name("openapi.yaml")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


MAX_ID_DIGITS = 18  # larger ids cannot exist (64-bit) and are refused before they reach the database

FIELD_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "texts": (dict,), "button": (dict, type(None)), "audience": (dict, type(None)),
                                            "schedule": (dict, type(None)), "paid": (bool,)}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer is JSON, and input no check foresaw is a 400 that says so, never a 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        log.warning("%s %s: bad input (%s)", request.method, request.path, type(exc).__name__)
        return error(400, f"this request cannot be read: {type(exc).__name__}")


PUBLIC = frozenset({"/openapi.yaml", "/healthz", "/readyz", "/metrics"})
PARTNER_PREFIX = "/partner/"
WEB_CHAT = web.AppKey("web_chat", object)


def is_web_chat(path: str) -> bool:
    return path in ("/", "/chat") or path.startswith("/chat/")
ALIVE = web.AppKey("alive", Callable[[], bool])
WEBHOOK_PATH = web.AppKey("webhook_path", str)
Webhook = tuple[str, Handler]  # the path Telegram posts to, and what takes the update (it checks the secret itself)


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC or request.path == request.app.get(WEBHOOK_PATH) or (WEB_CHAT in request.app and is_web_chat(request.path)):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return error(401, "send 'Authorization: Bearer <token>'; staff get a token with `python -m bot staff token`, "
                          "a partner's case system with `python -m bot partner token`")
    feature = request.app[FEATURE]
    token = header[len("Bearer "):].strip()
    if request.path.startswith(PARTNER_PREFIX):  # a partner's case system: its own cases, nothing else
        async with feature.core.db.session() as session:
            partner_id = await partner_for_token(session, token)
        if partner_id is None:
            return error(401, "unknown, expired or revoked partner token (staff tokens cannot read cases)")
        request[PARTNER] = partner_id
        return await handler(request)
    async with feature.core.db.session() as session:
        user = await feature.staff.user_for_token(session, token)
        if user is None:
            return error(401, "unknown or revoked token (a partner token reads only /partner/cases)")
        if not await feature.staff.can_broadcast(session, user):
            return error(403, "this token's owner has no campaign or admin role")
    request[STAFF] = user
    return await handler(request)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "send JSON (Content-Type: application/json)"}),
                                           content_type="application/json")
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"not valid JSON: {exc}"}), content_type="application/json") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}), content_type="application/json")
    return body


def _campaign_id(request: web.Request) -> int:
    raw = request.match_info["campaign_id"]
    if not raw.isdigit():
        raise web.HTTPBadRequest(text=json.dumps({"error": f"campaign id '{raw}' is not a number"}), content_type="application/json")
    if len(raw.lstrip("0")) > MAX_ID_DIGITS:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such campaign"}), content_type="application/json")
    return int(raw)


async def _view(feature: BroadcastsFeature, session: Any, campaign: Campaign) -> dict[str, Any]:
    progress = await feature.campaigns.progress(session, campaign, utcnow())
    return {**progress.as_dict(), "texts": campaign.texts, "button": campaign.button, "audience": campaign.audience,
            "schedule": campaign.schedule, "paid": campaign.paid, "created_at": campaign.created_at.isoformat(),
            "by_language": await feature.campaigns.figures(session, campaign),
            "warnings": [f"texts.{lang}: most of it is not in the {script} script; check it is the right language"
                         for lang, script in script_warnings(campaign.texts)]}


async def edit_campaign(request: web.Request) -> web.Response:
    """Texts, audience or time of a scheduled campaign, until it starts; audited."""
    feature, user = request.app[FEATURE], request[STAFF]
    body = await _body(request)
    unknown = set(body) - {"texts", "audience", "schedule"}
    if unknown or not body:
        return error(400, f"send any of texts, audience, schedule{'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}")
    wrong = [f"{name} must be an object" for name in body if not isinstance(body[name], dict)]
    if wrong:
        return error(400, "; ".join(wrong))
    async with feature.core.db.transaction() as session:
        campaign = await session.get(Campaign, _campaign_id(request))
        if campaign is None:
            return error(404, "no such campaign")
        try:
            await feature.campaigns.edit(session, campaign, texts=body.get("texts"), audience=body.get("audience"), schedule=body.get("schedule"))
        except CampaignError as exc:
            return error(409 if "only a scheduled" in str(exc) else 400, str(exc))
        feature.staff.audit(session, user, "campaign_edited_api", f"campaign:{campaign.id}:{','.join(sorted(body))}")
        view = await _view(feature, session, campaign)
    return web.json_response(view)


async def campaign_figures_csv(request: web.Request) -> web.Response:
    feature = request.app[FEATURE]
    async with feature.core.db.session() as session:
        campaign = await session.get(Campaign, _campaign_id(request))
        if campaign is None:
            return error(404, "no such campaign")
        figures = await feature.campaigns.figures(session, campaign)
    lines = ["language,delivered,failed,blocked,remaining,opted_out"]
    lines += [f"{lang},{f['delivered']},{f['failed']},{f['blocked']},{f['remaining']},{f['opted_out']}" for lang, f in figures.items()]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign.id}.csv"'})


async def create_campaign(request: web.Request) -> web.Response:
    feature, user = request.app[FEATURE], request[STAFF]
    body = await _body(request)
    unknown = set(body) - {"name", "texts", "button", "audience", "schedule", "paid", "confirm_empty"}
    if unknown:
        return error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    if not isinstance(body.get("texts"), dict):
        return error(400, "texts: an object of language code to message, e.g. {\"km\": \"…\"}")
    wrong = [f"{name} must be {' or '.join('null' if t is type(None) else {'str': 'a string', 'dict': 'an object', 'bool': 'true or false'}[t.__name__] for t in types)}"
             for name, types in FIELD_TYPES.items() if name in body and not isinstance(body[name], types)]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in body["texts"].items()):
        wrong.append("texts: every message must be a string")
    if wrong:
        return error(400, "; ".join(wrong))
    if body.get("paid") and not feature.core.settings.paid_broadcast:
        return error(400, "paid broadcasts are off on this bot (PAID_BROADCAST); leave out \"paid\" or set it to false")
    try:  # what is wrong with the campaign itself is said before whom it reaches
        validate(str(body.get("name") or ""), body["texts"], body.get("button"), body.get("audience") or {},
                 body.get("schedule") or {"kind": "now"}, utcnow())
    except CampaignError as exc:
        return error(400, str(exc))
    async with feature.core.db.session() as session:
        probe = Campaign(name="probe", created_by=user.id or 0, texts=body["texts"], audience=body.get("audience") or {}, schedule={})
        if not await feature.campaigns.reach(session, probe) and body.get("confirm_empty") is not True:
            return error(409, "this campaign reaches no subscriber now (no one matches its languages and audience); "
                              "send \"confirm_empty\": true to create it anyway")
    async with feature.core.db.transaction() as session:
        try:
            campaign = await feature.campaigns.create(
                session, user, name=str(body.get("name") or ""), texts=body["texts"], button=body.get("button"),
                audience=body.get("audience") or {}, schedule=body.get("schedule") or {"kind": "now"}, paid=bool(body.get("paid")))
        except CampaignError as exc:
            return error(400, str(exc))
        feature.staff.audit(session, user, "campaign_created_api", f"campaign:{campaign.id}")
        view = await _view(feature, session, campaign)
    log.info("campaign %s created through the API", view["id"])
    return web.json_response(view, status=201)


async def list_campaigns(request: web.Request) -> web.Response:
    from sqlmodel import col, select

    feature = request.app[FEATURE]
    status = request.query.get("status")
    async with feature.core.db.session() as session:
        query = select(Campaign).order_by(col(Campaign.id).desc())
        if status:
            query = query.where(Campaign.status == status)
        campaigns = (await session.exec(query)).all()
        return web.json_response({"campaigns": [await _view(feature, session, c) for c in campaigns]})


async def show_campaign(request: web.Request) -> web.Response:
    feature = request.app[FEATURE]
    async with feature.core.db.session() as session:
        campaign = await session.get(Campaign, _campaign_id(request))
        if campaign is None:
            return error(404, "no such campaign")
        return web.json_response(await _view(feature, session, campaign))


def change(action: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        feature, user = request.app[FEATURE], request[STAFF]
        async with feature.core.db.transaction() as session:
            campaign = await session.get(Campaign, _campaign_id(request))
            if campaign is None:
                return error(404, "no such campaign")
            try:
                await feature.campaigns.set_status(session, campaign, action)
            except CampaignError as exc:
                return error(409, str(exc))
            feature.staff.audit(session, user, f"campaign_{action}_api", f"campaign:{campaign.id}")
            view = await _view(feature, session, campaign)
        feature.core.outbox.notify()
        return web.json_response(view)

    return handler


async def openapi(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(SPEC, headers={"Content-Type": "application/yaml"})


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the database answers, its schema is the code's, and the senders run."""
    problems = []
    try:
        current = await schema_revision(request.app[FEATURE].core.db)
        if current != head_revision():
            problems.append(f"database schema at {current}, code expects {head_revision()}: run the migrations")
    except Exception as exc:  # the database is not reachable
        problems.append(f"database unreachable ({type(exc).__name__})")
    if not request.app[ALIVE]():
        problems.append("a sender is not running")
    return web.json_response({"ok": not problems, "problems": problems}, status=503 if problems else 200)


async def metrics_page(request: web.Request) -> web.Response:
    body, content_type = await metrics.render(request.app[FEATURE].core.db)
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_api(feature: BroadcastsFeature, alive: Callable[[], bool] = lambda: True, webhook: Webhook | None = None,
              web_chat: Any = None) -> web.Application:
    app = web.Application(middlewares=[json_errors, bearer_auth])
    if web_chat is not None:
        app[WEB_CHAT] = web_chat
        app.router.add_routes(web_chat.routes())
    app[FEATURE] = feature
    app[ALIVE] = alive
    if webhook is not None:
        app[WEBHOOK_PATH] = webhook[0]
        app.router.add_post(webhook[0], webhook[1])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/openapi.yaml", openapi)
    app.router.add_get("/campaigns", list_campaigns)
    app.router.add_post("/campaigns", create_campaign)
    app.router.add_get("/campaigns/{campaign_id}", show_campaign)
    app.router.add_patch("/campaigns/{campaign_id}", edit_campaign)
    app.router.add_get("/campaigns/{campaign_id}/figures.csv", campaign_figures_csv)
    for action in ("pause", "resume", "cancel"):
        app.router.add_post(f"/campaigns/{{campaign_id}}/{action}", change(action))
    app.router.add_routes(case_routes(_case_reader))
    return app


def _case_reader(request: web.Request) -> tuple[CaseReader, Any]:
    from bot.features.reports import feature as reports

    core = request.app[FEATURE].core
    return CaseReader(reports(core).console), core.db


async def serve(feature: BroadcastsFeature, host: str, port: int, alive: Callable[[], bool] = lambda: True,
                webhook: Webhook | None = None, *, socket: str | None = None, web_chat: Any = None) -> web.AppRunner:
    runner = web.AppRunner(build_api(feature, alive, webhook, web_chat), handle_signals=False)
    await runner.setup()
    try:
        if socket:
            await web.UnixSite(runner, socket).start()
            log.info("staff API on unix:%s", socket)
        else:
            await web.TCPSite(runner, host, port).start()
            log.info("staff API on http://%s:%d", host, port)
    except BaseException:
        await runner.cleanup()
        raise
    return runner



