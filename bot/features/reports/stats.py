"""Statistics for research: reports by month, country and category, small cells hidden."""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.reports import ReportCount

SUPPRESSED = "<5"


async def report_table(session: AsyncSession, *, min_cell: int = 5, shared_only: bool = False) -> list[dict[str, str]]:
    """One row per month × country × category; a count under min_cell is shown as '<5'
    so that a single case cannot be picked out."""
    cells: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in (await session.exec(select(ReportCount))).all():
        if shared_only and not row.shared:
            continue
        cells[(row.month, row.country, row.category)] += row.count
    hidden = f"<{min_cell}"
    return [{"month": m, "country": c, "category": k, "reports": str(n) if n >= min_cell else hidden}
            for (m, c, k), n in sorted(cells.items())]


def as_text(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "no reports counted yet"
    header = f"{'month':<9}{'country':<9}{'category':<20}{'reports':>8}"
    lines = [header, "-" * len(header)]
    lines += [f"{r['month']:<9}{r['country']:<9}{r['category']:<20}{r['reports']:>8}" for r in rows]
    return "\n".join(lines)


def as_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["month", "country", "category", "reports"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
