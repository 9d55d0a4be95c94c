"""Flows as data: loading `flows/*.yaml` into steps, and checking that they hang together.

A flow is a graph of steps. A step may say texts (keys into the locale files), show
content (facts of a topic, hotlines of a country), offer choices, ask for free text,
branch on earlier answers, jump to another flow, or end. See flows/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine.yamlfile import ContentError, LineDict, Problem, line_of, load_yaml

ID = re.compile(r"^[A-Za-z0-9_]{1,24}$")
VAR = re.compile(r"^\{(\w+)\}$")
CALLBACK_LIMIT = 64

NAV_BACK, NAV_MENU, NAV_CONTINUE, NAV_MORE, NAV_SOURCES = "bk", "mn", "re", "mo", "so"
RESERVED_CHOICES = {"qx", NAV_BACK, NAV_MENU, NAV_CONTINUE, NAV_MORE, NAV_SOURCES}
RESUME = "_resume"  # `goto: _resume`: back to where a draft was left
ANSWER_MEANINGS = {"yes": ["yes"], "no": ["no"], "unsure": ["not_sure"], "not_sure": ["not_sure"], "skip": ["skip"],
                   "done": ["done"], "back": ["back"], "menu": ["menu"]}
STEP_KEYS = {"say", "choices", "ask", "accepts", "collect", "next", "goto", "branch", "facts", "hotlines", "end", "clear", "set",
             "columns", "action", "emergency"}
ASK_ACCEPTS = {"text", "location", "phone"}
QUICK_EXIT = "qx"
CHOICE_KEYS = {"id", "label", "label_lang", "set", "set_lang", "next", "goto", "when", "keywords", "means"}


@dataclass
class Choice:
    id: str
    label: str | None = None
    label_lang: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    set_lang: str | None = None
    next: str | None = None
    goto: str | None = None
    when: dict[str, Any] | None = None
    keywords: str | None = None
    means: list[str] = field(default_factory=list)
    line: int = 0


@dataclass
class Case:
    when: dict[str, Any] | None
    next: str
    line: int = 0


@dataclass
class Step:
    id: str
    say: list[str] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    ask: str | None = None
    next: str | None = None
    goto: str | None = None
    branch: list[Case] = field(default_factory=list)
    facts: str | None = None
    hotlines: str | None = None
    end: bool = False
    clear: list[str] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)
    columns: int | None = None
    action: str | None = None
    accepts: list[str] = field(default_factory=lambda: ["text"])
    collect: str | None = None
    emergency: str | None = None
    line: int = 0


@dataclass
class Flow:
    id: str
    start: str
    steps: dict[str, Step]
    path: Path
    quick_exit: bool = False
    keeps_draft: bool = False
    nav: bool = True
    line: int = 0


@dataclass
class Command:
    name: str
    flow: str
    description: str
    keywords: str | None = None
    line: int = 0
    staff: bool = False


@dataclass
class FlowSet:
    flows: dict[str, Flow]
    commands: dict[str, Command]
    deep_links: dict[str, str]
    commands_path: Path
    link_prefixes: dict[str, str] = field(default_factory=dict)

    def link_target(self, payload: str) -> tuple[str, str] | None:
        """The flow a /start payload opens, and the rest of the payload for prefixed links
        (e.g. inv_<token> → ('staff_invite', '<token>'))."""
        if payload in self.deep_links:
            return self.deep_links[payload], ""
        for prefix, flow in self.link_prefixes.items():
            if payload.startswith(prefix) and len(payload) > len(prefix):
                return flow, payload[len(prefix):]
        return None

    def open_target(self, name: str) -> str | None:
        """What an "open" button names: a deep link, or a flow that a deep link or a public
        command opens (never a staff flow or one that needs its own link argument)."""
        found = self.link_target(name)
        if found and not found[1]:
            return found[0]
        public = set(self.deep_links.values()) | {c.flow for c in self.commands.values() if not c.staff}
        return name if name in public else None


def callback_data(flow: str, step: str, choice: str) -> str:
    return f"c:{flow}:{step}:{choice}"


def parse_callback(data: str) -> tuple[str, str, str] | None:
    parts = data.split(":")
    if len(parts) != 4 or parts[0] != "c":
        return None
    return parts[1], parts[2], parts[3]


def matches(when: dict[str, Any] | None, values: dict[str, Any]) -> bool:
    """`when` holds if every named value is as asked: a value, a list of values, null for
    unset, or "*" for set to anything."""
    if not when:
        return True
    for name, expected in when.items():
        actual = values.get(name)
        if expected is None:
            if actual is not None:
                return False
        elif expected == "*":
            if actual is None:
                return False
        elif isinstance(expected, list):
            if actual not in expected:
                return False
        elif actual != expected:
            return False
    return True


def _word(value: Any) -> str:
    """YAML 1.1 reads a bare yes / no as a boolean; in a flow file they are words."""
    return {True: "yes", False: "no"}[value] if isinstance(value, bool) else str(value)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [_word(v) for v in value]
    return [_word(value)]


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def problem(self, node: Any, message: str, key: str | None = None) -> None:
        self.problems.append(Problem(self.path, line_of(node, key), message))

    def unknown_keys(self, node: LineDict, allowed: set[str], what: str) -> None:
        for key in node:
            if key not in allowed:
                self.problem(node, f"{what}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))})", key)

    def choice(self, node: Any, flow_id: str, step_id: str) -> Choice | None:
        if not isinstance(node, dict):
            self.problem(node, f"step '{step_id}': each choice must be a mapping")
            return None
        self.unknown_keys(node, CHOICE_KEYS, f"choice in step '{step_id}'")
        cid = _word(node.get("id", ""))
        if cid in RESERVED_CHOICES:
            self.problem(node, f"step '{step_id}': choice id '{cid}' is reserved for the navigation row", "id")
        if not ID.match(cid):
            self.problem(node, f"step '{step_id}': choice id '{cid}' must be 1-24 ASCII letters, digits or _", "id")
        elif len(callback_data(flow_id, step_id, cid).encode()) > CALLBACK_LIMIT:
            self.problem(node, f"choice '{cid}': button data over {CALLBACK_LIMIT} bytes; shorten flow, step or choice id")
        if not node.get("label") and not node.get("label_lang"):
            self.problem(node, f"choice '{cid}' needs a label (a text key) or label_lang")
        if not node.get("next") and not node.get("goto"):
            self.problem(node, f"choice '{cid}' needs next (a step) or goto (a flow)")
        return Choice(
            id=cid,
            label=node.get("label"),
            label_lang=node.get("label_lang"),
            set=dict(node.get("set") or {}),
            set_lang=node.get("set_lang"),
            next=node.get("next"),
            goto=node.get("goto"),
            when=dict(node["when"]) if node.get("when") else None,
            keywords=node.get("keywords"),
            means=_as_list(node.get("means")) or ANSWER_MEANINGS.get(cid, []),
            line=line_of(node),
        )

    def step(self, step_id: str, node: Any, flow_id: str) -> Step | None:
        if not isinstance(node, dict):
            self.problem(node, f"step '{step_id}' must be a mapping")
            return None
        if not ID.match(step_id):
            self.problem(node, f"step id '{step_id}' must be 1-24 ASCII letters, digits or _")
        self.unknown_keys(node, STEP_KEYS, f"step '{step_id}'")
        choices = [c for c in (self.choice(c, flow_id, step_id) for c in node.get("choices") or []) if c]
        cases = []
        for case in node.get("branch") or []:
            if not isinstance(case, dict) or not case.get("next"):
                self.problem(case, f"step '{step_id}': each branch case needs next")
                continue
            cases.append(Case(when=dict(case["when"]) if case.get("when") else None, next=str(case["next"]), line=line_of(case)))
        if cases and cases[-1].when is not None:
            self.problem(node, f"step '{step_id}': the last branch case must have no 'when', so that one always applies")
        step = Step(
            id=step_id,
            say=_as_list(node.get("say")),
            choices=choices,
            ask=node.get("ask"),
            next=node.get("next"),
            goto=node.get("goto"),
            branch=cases,
            facts=node.get("facts"),
            hotlines=node.get("hotlines"),
            end=bool(node.get("end")),
            clear=_as_list(node.get("clear")),
            set=dict(node.get("set") or {}),
            columns=node.get("columns"),
            action=node.get("action"),
            accepts=_as_list(node.get("accepts")) or ["text"],
            collect=node.get("collect"),
            emergency=node.get("emergency"),
            line=line_of(node),
        )
        for kind in step.accepts:
            if kind not in ASK_ACCEPTS:
                self.problem(node, f"step '{step_id}': accepts '{kind}' is not one of {sorted(ASK_ACCEPTS)}", "accepts")
        if step.collect and not step.choices:
            self.problem(node, f"step '{step_id}': collect needs choices (at least a 'done' button)")
        ways_on = sum(bool(x) for x in (step.choices or step.ask, step.next and not step.ask, step.goto, step.branch, step.end))
        if ways_on != 1:
            self.problem(node, f"step '{step_id}' needs exactly one of choices/ask, next, goto, branch, end")
        if step.ask and not step.next:
            self.problem(node, f"step '{step_id}': ask needs next (where to go with the answer)")
        if step.branch and (step.say or step.facts or step.hotlines):
            self.problem(node, f"step '{step_id}': a branch step only decides; put texts in the steps it leads to")
        return step

    def flow(self, data: Any) -> Flow | None:
        if not isinstance(data, dict):
            self.problem(data, "a flow file must be a mapping with flow, start and steps")
            return None
        self.unknown_keys(data, {"flow", "start", "steps", "quick_exit", "keeps_draft", "nav"}, "flow")
        flow_id = str(data.get("flow", ""))
        if not ID.match(flow_id):
            self.problem(data, f"flow id '{flow_id}' must be 1-24 ASCII letters, digits or _", "flow")
        if flow_id != self.path.stem:
            self.problem(data, f"flow id '{flow_id}' must match the file name '{self.path.stem}'", "flow")
        steps_node = data.get("steps")
        if not isinstance(steps_node, dict) or not steps_node:
            self.problem(data, "flow has no steps", "steps")
            return None
        steps = {}
        for sid, snode in steps_node.items():
            step = self.step(str(sid), snode, flow_id)
            if step:
                steps[str(sid)] = step
        start = str(data.get("start", ""))
        if start not in steps:
            self.problem(data, f"start step '{start}' is not a step of this flow", "start")
        return Flow(id=flow_id, start=start, steps=steps, path=self.path, quick_exit=bool(data.get("quick_exit")),
                    keeps_draft=bool(data.get("keeps_draft")), nav=data.get("nav", True) is not False, line=line_of(data))


def _check_links(flows: dict[str, Flow], problems: list[Problem]) -> None:
    for flow in flows.values():
        for step in flow.steps.values():
            targets = [(step.next, step.line)] + [(c.next, c.line) for c in step.choices] + [(c.next, c.line) for c in step.branch]
            for target, line in targets:
                if target and target not in flow.steps:
                    problems.append(Problem(flow.path, line, f"step '{step.id}' leads to '{target}', which is not a step of flow '{flow.id}'"))
            for target, line in [(step.goto, step.line)] + [(c.goto, c.line) for c in step.choices]:
                if target and not VAR.match(target) and target != RESUME and target not in flows:
                    problems.append(Problem(flow.path, line, f"step '{step.id}' jumps to flow '{target}', which does not exist"))


def load_flows(directory: Path) -> FlowSet:
    """Load every flow file and the command table; raise ContentError listing every problem."""
    problems: list[Problem] = []
    flows: dict[str, Flow] = {}
    for path in sorted(directory.glob("*.yaml")):
        data = load_yaml(path)
        if not (isinstance(data, dict) and "flow" in data):
            continue
        reader = _Reader(path)
        flow = reader.flow(data)
        problems.extend(reader.problems)
        if flow:
            if flow.id in flows:
                problems.append(Problem(path, flow.line, f"flow '{flow.id}' is defined twice"))
            flows[flow.id] = flow
    _check_links(flows, problems)

    commands_path = directory / "commands.yaml"
    commands: dict[str, Command] = {}
    deep_links: dict[str, str] = {}
    link_prefixes: dict[str, str] = {}
    if not commands_path.exists():
        problems.append(Problem(commands_path, 0, "missing: the table of commands and deep links"))
    else:
        data = load_yaml(commands_path)
        for name, node in (data.get("commands") or {}).items():
            line = line_of(data.get("commands"), name)
            if not re.match(r"^[a-z0-9_]{1,32}$", str(name)):
                problems.append(Problem(commands_path, line, f"command '{name}': 1-32 lowercase letters, digits or _"))
            if not isinstance(node, dict) or node.get("flow") not in flows:
                problems.append(Problem(commands_path, line, f"command '{name}' must name an existing flow"))
                continue
            if not node.get("description"):
                problems.append(Problem(commands_path, line, f"command '{name}' needs a description text key"))
            commands[str(name)] = Command(str(name), node["flow"], node.get("description", ""), node.get("keywords"), line,
                                          staff=bool(node.get("staff")))
        for payload, flow_id in (data.get("deep_links") or {}).items():
            line = line_of(data.get("deep_links"), payload)
            if not re.match(r"^[A-Za-z0-9_-]{1,64}$", str(payload)):
                problems.append(Problem(commands_path, line, f"deep link '{payload}': 1-64 of A-Z a-z 0-9 _ -"))
            if flow_id not in flows:
                problems.append(Problem(commands_path, line, f"deep link '{payload}' names flow '{flow_id}', which does not exist"))
            deep_links[str(payload)] = str(flow_id)
        for prefix, flow_id in (data.get("deep_link_prefixes") or {}).items():
            line = line_of(data.get("deep_link_prefixes"), prefix)
            if not re.match(r"^[A-Za-z0-9]{1,16}_$", str(prefix)):
                problems.append(Problem(commands_path, line, f"deep-link prefix '{prefix}': letters or digits ending in _"))
            if flow_id not in flows:
                problems.append(Problem(commands_path, line, f"deep-link prefix '{prefix}' names flow '{flow_id}', which does not exist"))
            link_prefixes[str(prefix)] = str(flow_id)
    for required in ("start", "menu"):
        if required not in flows:
            problems.append(Problem(directory, 0, f"a flow named '{required}' is required"))
    if problems:
        raise ContentError(problems)
    return FlowSet(flows=flows, commands=commands, deep_links=deep_links, commands_path=commands_path, link_prefixes=link_prefixes)


def text_keys(flow: Flow) -> list[tuple[str, int]]:
    """Every locale key a flow uses, with the line that uses it."""
    keys: list[tuple[str, int]] = []
    for step in flow.steps.values():
        keys += [(k, step.line) for k in step.say]
        for choice in step.choices:
            if choice.label:
                keys.append((choice.label, choice.line))
            if choice.keywords:
                keys.append((choice.keywords, choice.line))
    return keys
