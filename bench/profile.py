"""Where a bot process spends its busy time, from a py-spy sampling record.

`python -m bench.updates --profile` records the SafeRoute process with py-spy for the whole
drive and prints this summary of the samples where it was busy (py-spy counts a thread
waiting in a system call as active: the event loop's epoll and SQLite's worker thread waiting
for the next statement are set apart as waiting). Each busy sample is charged to the layer of
its innermost frame (self time) and to every layer on its stack (inclusive time). SQLAlchemy's
async layer runs its work in greenlets whose stacks py-spy shows without the coroutine that
awaited them, so "our functions" under-count what reaches the database. py-spy is a
benchmark-only tool (`pip install py-spy`); it needs permission to read the process (root, or
ptrace allowed).

    python -m bench.profile record.txt       # summarise a record made earlier (py-spy --format raw)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Order matters: the first pattern that matches a frame's file names its layer.
LAYERS: list[tuple[str, str]] = [
    ("sqlalchemy/orm/", "SQLAlchemy ORM"),
    ("sqlalchemy/", "SQLAlchemy Core"),
    ("sqlmodel/", "SQLModel"),
    ("aiosqlite/", "SQLite (aiosqlite thread)"),
    ("storage/sqlite_driver", "SQLite (driver)"),
    ("asyncpg/", "asyncpg"),
    ("telegram/", "python-telegram-bot"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpx"),
    ("asyncio/", "asyncio"),
    ("cryptography/", "encryption"),
    ("storage/crypto", "encryption"),
    ("storage/direct", "statements on the driver"),
    ("json/", "JSON"),
    ("bot/engine/understand", "understanding"),
    ("bot/engine/matching", "understanding"),
    ("icu", "understanding"),
    ("bot/engine/", "flow engine"),
    ("bot/features/", "features"),
    ("bot/conversation", "conversation (transaction)"),
    ("bot/inbox", "inbox"),
    ("bot/outbox", "outbox (sending)"),
    ("bot/channels/", "Telegram adapter"),
    ("storage/", "storage"),
    ("logging/", "logging"),
    ("prometheus_client/", "metrics"),
]
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


IDLE = ("(selectors.py", "_connection_worker_thread (aiosqlite/")  # the event loop and SQLite's thread waiting for work


def layer_of(frame: str) -> str:
    match = FRAME.match(frame)
    where = match.group("file") if match else frame
    for pattern, layer in LAYERS:
        if pattern in where:
            return layer
    return "other"


def summarise(record: Path, top: int = 12) -> str:
    """A table of layers by self and inclusive share of the recorded samples, and the hottest
    functions of our own code (bot/, storage/) by inclusive share."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = idle = 0
    for line in record.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames or any(mark in frames[-1] for mark in IDLE):
            idle += samples
            continue
        total += samples
        own[layer_of(frames[-1])] += samples
        for layer in {layer_of(f) for f in frames}:
            inclusive[layer] += samples
        for function in {f for f in frames if ("(bot/" in f or "(storage/" in f) and "__main__" not in f}:
            match = FRAME.match(function)
            if match:
                ours[f"{match.group('function')} ({Path(match.group('file')).parent.name}/{Path(match.group('file')).name})"] += samples
    if not total:
        return "no samples recorded"
    lines = [f"{total} busy samples ({idle} more waiting for I/O or work); shares of the busy ones", f"{'layer':<30}{'self':>8}{'inclusive':>11}"]
    for layer in sorted(inclusive, key=lambda name: (-own[name], -inclusive[name])):
        lines.append(f"{layer:<30}{own[layer] / total:>7.0%}{inclusive[layer] / total:>10.0%}")
    lines.append(f"\n{'our functions, inclusive':<70}{'share':>7}")
    for function, samples in ours.most_common(top):
        lines.append(f"{function[:69]:<70}{samples / total:>6.0%}")
    return "\n".join(lines)


def start_recording(pid: int, record: Path, rate: int = 250) -> subprocess.Popen[bytes] | None:
    """py-spy attached to the process until it is stopped; None (said) when py-spy is missing."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed (pip install py-spy): no profile", flush=True)
        return None
    return subprocess.Popen([spy, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(record), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_recording(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(2)  # py-spy writes its record on SIGINT
    spy.wait(timeout=60)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(summarise(Path(sys.argv[1])))
