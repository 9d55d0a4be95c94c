"""Which partner gets a case, and why. Pure functions: the reasons are stored with each
decision, so that a routing choice can always be explained afterwards."""

from __future__ import annotations

from dataclasses import dataclass

from bot.features.reports.partners import Partner, PartnerBook


@dataclass(frozen=True)
class CaseFacts:
    country: str
    province: str | None
    category: str
    lang: str
    urgent: bool


@dataclass(frozen=True)
class RouteDecision:
    partner: Partner
    kind: str
    reason: str


def _score(partner: Partner, case: CaseFacts) -> tuple[int, list[str]]:
    score, why = 0, [f"covers {case.country}"]
    if case.category in partner.categories:
        score += 4
        why.append(f"specialises in {case.category}")
    if case.province and case.province in partner.provinces.get(case.country, []):
        score += 3
        why.append(f"covers province {case.province}")
    else:
        why.append("takes all categories")
    if case.lang in partner.languages:
        score += 1
        why.append(f"reads {case.lang}")
    return score, why


def ranked(book: PartnerBook, case: CaseFacts) -> list[tuple[Partner, str]]:
    """Partners that may take the case, most specific first, each with why it fits."""
    fits = [(p, *_score(p, case)) for p in book.partners.values() if case.country in p.countries and p.takes(case.category)]
    fits.sort(key=lambda item: (-item[1], item[0].fallback, item[0].id))
    return [(p, ", ".join(why)) for p, _, why in fits]


def route_report(book: PartnerBook, case: CaseFacts) -> list[RouteDecision]:
    candidates = ranked(book, case)
    decisions: list[RouteDecision] = []
    if candidates:
        partner, why = candidates[0]
        decisions.append(RouteDecision(partner, "primary", f"most specific match: {why}"))
    if case.urgent or not candidates:
        for partner in book.partners.values():
            if partner.fallback and case.country in partner.countries and all(d.partner.id != partner.id for d in decisions):
                reason = "urgent case: also sent to the fallback" if candidates else "no partner takes this category: fallback"
                decisions.append(RouteDecision(partner, "fallback", f"{reason} for {case.country}"))
    return decisions


def next_partner(book: PartnerBook, case: CaseFacts, already: set[str]) -> tuple[Partner, str] | None:
    """The partner a case escalates to when the current one has not acknowledged it."""
    for partner, why in ranked(book, case):
        if partner.id not in already:
            return partner, why
    for partner in book.partners.values():
        if partner.fallback and case.country in partner.countries and partner.id not in already:
            return partner, f"fallback for {case.country}"
    return None
