"""The data behind the two screenings: red flags of a job offer (flows/data/redflags.yaml,
with weights and risk levels) and the ILO forced-labour indicators the self-screening asks
about (flows/data/selfcheck.yaml). Loading validates them; `check` reports every problem
with its file and line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine.content import Content
from bot.engine.flows import FlowSet
from bot.engine.yamlfile import Problem, line_of, load_yaml

ANSWERS = ("yes", "no", "unsure")
LEVELS = ("low", "medium", "high")
FLAG_ID = re.compile(r"^(RF-\d{1,2}|ILO-\d{1,2})$")
QUESTION_ID = re.compile(r"^[a-z][a-z0-9_]{0,20}$")
REDFLAGS_FLOW, SELFCHECK_FLOW = "redflags", "selfcheck"
REDFLAG_PREFIX = "rf_"


@dataclass
class Question:
    id: str
    text: str
    flags: list[str]
    sources: list[str]
    facts: list[str]
    weight: float
    corridor_facts: str | None = None
    line: int = 0

    @property
    def answer(self) -> str:
        """The value the flow stores the answer in."""
        return f"{REDFLAG_PREFIX}{self.id}"


@dataclass
class RedFlags:
    path: Path
    questions: list[Question] = field(default_factory=list)
    medium: float = 0.0
    high: float = 0.0
    not_sure_factor: float = 0.5

    def by_id(self, qid: str) -> Question:
        return next(q for q in self.questions if q.id == qid)


@dataclass
class Scored:
    score: float
    level: str
    raised: list[Question]
    unsure: list[Question]

    @property
    def flags(self) -> list[str]:
        """The red-flag ids answered yes, in question order, without repeats."""
        return list(dict.fromkeys(f for q in self.raised for f in q.flags))


def score(redflags: RedFlags, answers: dict[str, Any]) -> Scored:
    """Score a person's answers ({question id: "yes" | "no" | "unsure"}; missing = no).
    See the comment at the top of flows/data/redflags.yaml."""
    total = 0.0
    raised: list[Question] = []
    unsure: list[Question] = []
    for question in redflags.questions:
        answer = answers.get(question.id)
        if answer == "yes":
            total += question.weight
            raised.append(question)
        elif answer == "unsure":
            total += question.weight * redflags.not_sure_factor
            unsure.append(question)
    level = "high" if total >= redflags.high else "medium" if total >= redflags.medium else "low"
    return Scored(total, level, raised, unsure)


@dataclass
class Indicator:
    id: str
    answer: str
    name: str
    line: int = 0


@dataclass
class SelfCheck:
    path: Path
    sources: list[str] = field(default_factory=list)
    indicators: list[Indicator] = field(default_factory=list)


def _number(node: Any, key: str, path: Path, problems: list[Problem], what: str) -> float:
    value = node.get(key) if isinstance(node, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        problems.append(Problem(path, line_of(node, key), f"{what}: '{key}' must be a number, 0 or more"))
        return 0.0
    return float(value)


def _answers_set_by(flows: FlowSet | None, flow_id: str) -> dict[str, set[str]] | None:
    """{value name: the answers its choices set} for every choice of a flow."""
    if flows is None or flow_id not in flows.flows:
        return None
    found: dict[str, set[str]] = {}
    for step in flows.flows[flow_id].steps.values():
        for choice in step.choices:
            for name, value in choice.set.items():
                found.setdefault(str(name), set()).add(str(value))
    return found


def _check_facts(ids: list[str], content: Content | None, path: Path, line: int, what: str, problems: list[Problem]) -> list[str]:
    """The sources of the listed facts; a problem for any that is unknown or not solid."""
    if content is None:
        return []
    facts = {f.id: f for f in content.facts}
    sources: list[str] = []
    for fid in ids:
        fact = facts.get(fid)
        if fact is None:
            problems.append(Problem(path, line, f"{what}: fact '{fid}' is not in facts.yaml"))
        elif not fact.shown:
            problems.append(Problem(path, line, f"{what}: fact '{fid}' is {fact.status}; only solid facts may be shown"))
        else:
            sources += fact.sources
    return sources


def redflags_path(flows_dir: Path) -> Path:
    return flows_dir / "data" / "redflags.yaml"


def selfcheck_path(flows_dir: Path) -> Path:
    return flows_dir / "data" / "selfcheck.yaml"


def load_redflags(flows_dir: Path, content: Content | None = None, flows: FlowSet | None = None) -> tuple[RedFlags, list[Problem]]:
    path = redflags_path(flows_dir)
    result, problems = RedFlags(path), []
    if not path.exists():
        return result, [Problem(path, 0, "missing: the red-flag questions and their weights")]
    data: Any = load_yaml(path) or {}
    levels = data.get("levels") or {}
    result.medium = _number(levels, "medium", path, problems, "levels")
    result.high = _number(levels, "high", path, problems, "levels")
    if not 0 < result.medium < result.high:
        problems.append(Problem(path, line_of(data, "levels"), "levels: need 0 < medium < high"))
    result.not_sure_factor = _number(data, "not_sure_factor", path, problems, "red flags")
    if result.not_sure_factor > 1:
        problems.append(Problem(path, line_of(data, "not_sure_factor"), "not_sure_factor must be between 0 and 1"))
    known_sources = set(content.sources) if content else None
    seen: set[str] = set()
    for node in data.get("questions") or []:
        line = line_of(node)
        if not isinstance(node, dict):
            problems.append(Problem(path, line, "each question must be a mapping"))
            continue
        qid = str(node.get("id", ""))
        what = f"question '{qid}'"
        if not QUESTION_ID.match(qid):
            problems.append(Problem(path, line, f"{what}: id must be 1-21 lowercase letters, digits or _"))
        if qid in seen:
            problems.append(Problem(path, line, f"{what} is defined twice"))
        seen.add(qid)
        flags = [str(f) for f in node.get("flags") or []]
        if not flags or not all(FLAG_ID.match(f) for f in flags):
            problems.append(Problem(path, line, f"{what}: flags must list red-flag ids like RF-5 (or ILO-9 for a forced-labour indicator)"))
        sources = [str(s) for s in node.get("sources") or []]
        if not sources:
            problems.append(Problem(path, line, f"{what}: no sources"))
        for sid in sources:
            if known_sources is not None and sid not in known_sources:
                problems.append(Problem(path, line, f"{what}: source '{sid}' is not in sources.yaml"))
        facts = [str(f) for f in node.get("facts") or []]
        if not facts:
            problems.append(Problem(path, line, f"{what}: list the facts that explain this flag"))
        fact_sources = _check_facts(facts, content, path, line, what, problems)
        if content is not None and fact_sources and set(fact_sources) != set(sources):
            problems.append(Problem(path, line, f"{what}: sources {sorted(sources)} are not the sources of its facts {sorted(set(fact_sources))}"))
        weight = _number(node, "weight", path, problems, what)
        corridor = node.get("corridor_facts")
        if corridor and content is not None and not any(f.topic == corridor and f.shown for f in content.facts):
            problems.append(Problem(path, line, f"{what}: corridor_facts '{corridor}' is not a topic with solid facts in facts.yaml"))
        if not node.get("text"):
            problems.append(Problem(path, line, f"{what}: needs a text key"))
        result.questions.append(Question(qid, str(node.get("text") or ""), flags, sources, facts, weight,
                                         node.get("corridor_facts"), line))
    if not result.questions:
        problems.append(Problem(path, line_of(data), "no questions"))
    answers = _answers_set_by(flows, REDFLAGS_FLOW)
    if answers is not None and flows is not None:
        said = {key for step in flows.flows[REDFLAGS_FLOW].steps.values() for key in step.say}
        for question in result.questions:
            if question.text and question.text not in said:
                problems.append(Problem(path, question.line, f"question '{question.id}': no step of flows/{REDFLAGS_FLOW}.yaml says {question.text}"))
            if answers.get(question.answer) != set(ANSWERS):
                problems.append(Problem(path, question.line, f"question '{question.id}': flows/{REDFLAGS_FLOW}.yaml must have choices setting "
                                                             f"{question.answer} to each of {', '.join(ANSWERS)}"))
        for name in answers:
            if name.startswith(REDFLAG_PREFIX) and name[len(REDFLAG_PREFIX):] not in seen:
                problems.append(Problem(flows.flows[REDFLAGS_FLOW].path, 0, f"the flow asks '{name}', which has no question (and weight) in {path.name}"))
    return result, problems


def load_selfcheck(flows_dir: Path, content: Content | None = None, flows: FlowSet | None = None) -> tuple[SelfCheck, list[Problem]]:
    path = selfcheck_path(flows_dir)
    result, problems = SelfCheck(path), []
    if not path.exists():
        return result, [Problem(path, 0, "missing: the forced-labour indicators of the self-screening")]
    data: Any = load_yaml(path) or {}
    result.sources = [str(s) for s in data.get("sources") or []]
    if not result.sources:
        problems.append(Problem(path, line_of(data), "no sources for the indicators"))
    for sid in result.sources:
        if content is not None and sid not in content.sources:
            problems.append(Problem(path, line_of(data, "sources"), f"source '{sid}' is not in sources.yaml"))
    seen: set[str] = set()
    for node in data.get("indicators") or []:
        line = line_of(node)
        iid, answer, name = str(node.get("id", "")), str(node.get("answer", "")), str(node.get("name", ""))
        if not re.match(r"^ILO-\d{1,2}$", iid):
            problems.append(Problem(path, line, f"indicator '{iid}': id must be ILO-n, n as in the ILO's list"))
        if iid in seen:
            problems.append(Problem(path, line, f"indicator '{iid}' is listed twice"))
        seen.add(iid)
        if not answer or not name:
            problems.append(Problem(path, line, f"indicator '{iid}': needs answer (the value the flow sets) and name (a text key)"))
        result.indicators.append(Indicator(iid, answer, name, line))
    answers = _answers_set_by(flows, SELFCHECK_FLOW)
    if answers is not None:
        for indicator in result.indicators:
            if "yes" not in answers.get(indicator.answer, set()):
                problems.append(Problem(path, indicator.line, f"indicator '{indicator.id}': no choice in flows/{SELFCHECK_FLOW}.yaml sets "
                                                              f"{indicator.answer} to yes"))
    return result, problems
