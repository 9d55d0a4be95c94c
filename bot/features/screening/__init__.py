"""Screenings: is this job offer a trap, and am I in forced labour?

- flows/redflags.yaml: about ten quick questions on a job offer, each a sourced red flag of
  fraudulent recruitment; weights and risk levels in flows/data/redflags.yaml.
- flows/selfcheck.yaml: short questions built on the ILO indicators of forced labour
  (flows/data/selfcheck.yaml), for someone already working. Nothing is kept: the answers
  are cleared when the result is shown, and only if the person goes on to report do the
  ids of the indicators answered yes go with the report.
- flows/scam.yaml: the scam-compound warning, shown with `screening.facts`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.engine.content import load_content
from bot.engine.runner import Action
from bot.engine.yamlfile import ContentError, Problem
from bot.features.screening.actions import FACTS, TEXT_KEYS, Screening
from bot.features.screening.data import load_redflags, load_selfcheck

if TYPE_CHECKING:
    from bot.app import Core

ACTION_NAMES = frozenset({
    "screening.redflags_result", "screening.redflags_handoff", "screening.selfcheck_result", "screening.selfcheck_handoff",
    "screening.facts",
})


def actions(core: Core) -> dict[str, Action]:
    redflags, problems = load_redflags(core.settings.flows_dir, core.content, core.flows)
    selfcheck, more = load_selfcheck(core.settings.flows_dir, core.content, core.flows)
    if problems + more:
        raise ContentError(problems + more)
    screening = Screening(redflags, selfcheck, core.content)
    return {
        "screening.redflags_result": screening.redflags_result,
        "screening.redflags_handoff": screening.redflags_handoff,
        "screening.selfcheck_result": screening.selfcheck_result,
        "screening.selfcheck_handoff": screening.selfcheck_handoff,
        "screening.facts": screening.show_facts,
    }


def _fact_lists(flows: Any, content: Any) -> list[Problem]:
    """Every step that shows facts with `screening.facts` names solid facts only."""
    problems: list[Problem] = []
    facts = {f.id: f for f in content.facts} if content else {}
    for flow in getattr(flows, "flows", {}).values():
        for step in flow.steps.values():
            if step.action != "screening.facts":
                continue
            ids = step.set.get(FACTS)
            if not isinstance(ids, list) or not ids:
                problems.append(Problem(flow.path, step.line, f"step '{step.id}': screening.facts needs set: {{{FACTS}: [fact ids]}}"))
                continue
            for fid in ids:
                if content and (fid not in facts or not facts[fid].shown):
                    problems.append(Problem(flow.path, step.line, f"step '{step.id}': fact '{fid}' is not a solid fact in facts.yaml"))
    return problems


def check_content(flows_dir: Path, flows: Any = None) -> list[Problem]:
    try:
        content = load_content(flows_dir)
    except ContentError:
        content = None  # check reports the content errors itself
    _, problems = load_redflags(flows_dir, content, flows)
    selfcheck, more = load_selfcheck(flows_dir, content, flows)
    for indicator in selfcheck.indicators:
        if indicator.name and indicator.name not in TEXT_KEYS:
            more.append(Problem(selfcheck.path, indicator.line, f"indicator '{indicator.id}': text key '{indicator.name}' "
                                                                f"is not in TEXT_KEYS of bot/features/screening"))
    return problems + more + _fact_lists(flows, content)
