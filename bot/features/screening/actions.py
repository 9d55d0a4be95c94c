"""The screenings' steps that need code: scoring a job offer's red flags, summing up the
forced-labour self-screening, handing a short summary to the report journey, and showing a
chosen list of facts with their sources (the scam-compound explainer)."""

from __future__ import annotations

from typing import Any

from bot.engine.content import Content, Fact
from bot.engine.runner import Turn
from bot.features.screening.data import RedFlags, SelfCheck, score

# Values the flows and these actions share (flows/redflags.yaml, flows/selfcheck.yaml).
RF_LEVEL, RF_RAISED = "rf_level", "rf_raised"
SC_YES = "sc_yes"
SUMMARY = "screening_summary"  # read by the report journey
FACTS = "_facts"  # a step's list of fact ids for `screening.facts`

TEXT_KEYS = (
    "redflags.level.low", "redflags.level.medium", "redflags.level.high", "redflags.raised", "redflags.unsure_list",
    "redflags.todo.low", "redflags.todo.medium", "redflags.todo.high",
    "selfcheck.result.none", "selfcheck.result.some", "selfcheck.result.means",
    # the names of the ILO indicators (flows/data/selfcheck.yaml)
    *(f"selfcheck.ind.{name}" for name in ("deception", "wages", "debt", "documents", "movement", "isolation", "threats",
                                          "violence", "overtime", "conditions", "vulnerability")),
)


def say_facts(turn: Turn, facts: list[Fact]) -> None:
    for fact in facts:
        turn.say_html(f"• {turn.text(fact.text_key)}\n{turn.engine.source_line(turn, fact.sources)}")


class Screening:
    def __init__(self, redflags: RedFlags, selfcheck: SelfCheck, content: Content) -> None:
        self.redflags = redflags
        self.selfcheck = selfcheck
        self.content = content

    def facts(self, ids: list[str]) -> list[Fact]:
        shown = {f.id: f for f in self.content.facts if f.shown}
        return [shown[i] for i in ids if i in shown]

    # -- red flags of a job offer -------------------------------------------------------------

    async def redflags_result(self, turn: Turn) -> str | None:
        answers = {q.id: turn.values.get(q.answer) for q in self.redflags.questions}
        result = score(self.redflags, answers)
        turn.say(f"redflags.level.{result.level}")
        shown: set[str] = set()
        if result.raised:
            turn.say("redflags.raised")
        for question in result.raised:
            facts = [f for f in self.facts(question.facts) if f.id not in shown]
            if question.corridor_facts:
                facts += [f for f in self.content.facts_for(question.corridor_facts, turn.values.get("origin"), turn.values.get("destination"))
                          if f.id not in shown and f not in facts]
            shown |= {f.id for f in facts}
            say_facts(turn, facts)
        if result.unsure:
            turn.say("redflags.unsure_list")
            turn.say_html("\n".join(f"• {turn.text(q.text)}" for q in result.unsure))
        turn.say(f"redflags.todo.{result.level}")
        turn.values[RF_LEVEL] = result.level
        turn.values[RF_RAISED] = result.flags
        return None

    async def redflags_handoff(self, turn: Turn) -> str | None:
        """Going on to report the offer: the report carries the red-flag ids, nothing else."""
        flags = list(turn.values.get(RF_RAISED) or [])
        if flags:
            turn.values[SUMMARY] = flags
        return None

    # -- forced-labour self-screening ---------------------------------------------------------

    async def selfcheck_result(self, turn: Turn) -> str | None:
        yes = [i for i in self.selfcheck.indicators if turn.values.get(i.answer) == "yes"]
        if not yes:
            turn.say("selfcheck.result.none")
        else:
            turn.say("selfcheck.result.some", count=len(yes))
            lines = "\n".join(f"• {turn.text(i.name)}" for i in yes)
            means = turn.text("selfcheck.result.means")
            turn.say_html(f"{lines}\n\n{means}\n{turn.engine.source_line(turn, self.selfcheck.sources)}")
        turn.values[SC_YES] = [i.id for i in yes]
        return None

    async def selfcheck_handoff(self, turn: Turn) -> str | None:
        """Going on to report: only the ids of the indicators answered yes go with it."""
        yes = list(turn.values.get(SC_YES) or [])
        if yes:
            turn.values[SUMMARY] = yes
        return None

    # -- facts chosen by the flow -------------------------------------------------------------

    async def show_facts(self, turn: Turn) -> str | None:
        ids: Any = turn.values.pop(FACTS, None) or []
        say_facts(turn, self.facts([str(i) for i in ids]))
        return None
