"""The small HTML subset that every channel can render (Telegram's parse_mode=HTML)."""

from __future__ import annotations

import re

ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre"}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s[^<>]*)?)>")
_BARE_AMP = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


def html_problems(text: str) -> list[str]:
    """What a Bot API server would refuse in this text; empty when it is fine."""
    problems: list[str] = []
    if _BARE_AMP.search(text):
        problems.append("a bare '&' (write &amp;)")
    stack: list[str] = []
    position = 0
    for match in _TAG.finditer(text):
        if "<" in text[position : match.start()] or ">" in text[position : match.start()]:
            problems.append("a bare '<' or '>' (write &lt; or &gt;)")
        position = match.end()
        closing, name = match.group(1), match.group(2).lower()
        if name not in ALLOWED_TAGS:
            problems.append(f"tag <{name}> is not allowed")
            continue
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            problems.append(f"</{name}> does not close the open tag")
    if "<" in text[position:] or ">" in text[position:]:
        problems.append("a bare '<' or '>' (write &lt; or &gt;)")
    if stack:
        problems.append(f"<{stack[-1]}> is never closed")
    return problems
