"""Partners as data, routing decisions with reasons, statistics with small cells hidden."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.check import check_project
from bot.features.reports.partners import load_partners
from bot.features.reports.routing import CaseFacts, next_partner, route_report
from bot.features.reports.stats import as_csv, report_table
from bot.settings import PROJECT_ROOT
from storage import connect
from storage.reports import ReportCount

PARTNERS = PROJECT_ROOT / "flows" / "data" / "partners.yaml"


def test_the_most_specific_partner_gets_the_case_and_urgent_cases_also_go_to_the_fallback() -> None:
    book = load_partners(PARTNERS)
    calm = route_report(book, CaseFacts("TH", "bangkok", "documents_wages", "vi", urgent=False))
    assert [(d.partner.id, d.kind) for d in calm] == [("demo_bangkok", "primary")]
    assert "covers province bangkok" in calm[0].reason and "reads vi" in calm[0].reason

    urgent = route_report(book, CaseFacts("TH", "bangkok", "trafficking", "vi", urgent=True))
    assert [(d.partner.id, d.kind) for d in urgent] == [("demo_bangkok", "primary"), ("demo_thailand_network", "fallback")]

    scam = route_report(book, CaseFacts("KH", "sihanoukville", "scam_compound", "en", urgent=False))
    assert scam[0].partner.id == "demo_scam_watch" and "specialises in scam_compound" in scam[0].reason

    assert route_report(book, CaseFacts("JP", None, "other", "en", urgent=True)) == []


def test_escalation_goes_down_the_ranking_then_to_the_fallback() -> None:
    book = load_partners(PARTNERS)
    case = CaseFacts("TH", "bangkok", "other", "th", urgent=False)
    assert next_partner(book, case, {"demo_bangkok"})[0].id == "demo_thailand_network"  # type: ignore[index]
    assert next_partner(book, case, {"demo_bangkok", "demo_thailand_network"}) is None


def test_check_rejects_broken_partners_and_uncovered_countries_with_their_line(tmp_path: Path) -> None:
    flows, locales = tmp_path / "flows", tmp_path / "locales"
    shutil.copytree(PROJECT_ROOT / "flows", flows)
    shutil.copytree(PROJECT_ROOT / "locales", locales)
    partners = flows / "data" / "partners.yaml"
    text = partners.read_text()
    partners.write_text(text.replace("timezone: Asia/Ho_Chi_Minh", "timezone: Asia/Saigon_City"))
    messages = [str(p) for p in check_project(flows, locales).problems]
    hanoi_line = next(i for i, line in enumerate(text.splitlines(), 1) if "id: demo_hanoi" in line)
    assert any(f"partners.yaml:{hanoi_line}:" in m and "Asia/Saigon_City" in m for m in messages), messages

    partners.write_text(text.replace("hotline_only: [LA, MM, KR, JP, TW, SA, other]", "hotline_only: [LA, MM, KR, JP, TW, other]"))
    messages = [str(p) for p in check_project(flows, locales).problems]
    assert any("country SA is offered" in m for m in messages), messages


async def test_statistics_hide_cells_under_five(tmp_path: Path) -> None:
    db = await connect(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    try:
        async with db.transaction() as session:
            session.add(ReportCount(month="2026-10", country="TH", category="trafficking", shared=True, count=4))
            session.add(ReportCount(month="2026-10", country="TH", category="trafficking", shared=False, count=3))
            session.add(ReportCount(month="2026-11", country="KH", category="scam_compound", shared=True, count=2))
        async with db.session() as session:
            rows = await report_table(session)
        assert rows == [
            {"month": "2026-10", "country": "TH", "category": "trafficking", "reports": "7"},
            {"month": "2026-11", "country": "KH", "category": "scam_compound", "reports": "<5"},
        ]
        assert as_csv(rows).splitlines()[0] == "month,country,category,reports"
    finally:
        await db.close()
