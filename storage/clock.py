"""The one clock the bot reads, so that tests and CI can say what time it is.

Quiet hours, schedules and escalation deadlines depend on the time of day; a suite that
reads the wall clock passes or fails by the hour it runs at. Everything asks `utcnow()`;
a test (or `SAFEROUTE_SIMULATED_TIME=HH:MM` for a whole run, bot processes included)
shifts it so that "now" is a chosen time of day while time still flows, so leases and
timeouts keep working.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, time, timedelta, timezone

_offset = timedelta(0)
ENV = "SAFEROUTE_SIMULATED_TIME"
SINCE = "SAFEROUTE_SIMULATED_SINCE"
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


def wall() -> datetime:
    return datetime.now(timezone.utc)


def utcnow() -> datetime:
    return wall() + _offset


def shift_to(clock_time: time | str, *, at: datetime | None = None) -> None:
    """Make it `clock_time` (UTC time of day, today's date kept) at the wall-clock moment `at`
    (default: now), time still flowing."""
    global _offset
    if isinstance(clock_time, str):
        match = _HHMM.match(clock_time.strip())
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise ValueError(f"{ENV} must be HH:MM (UTC), not {clock_time!r}")
        clock_time = time(int(match.group(1)), int(match.group(2)))
    real = at or wall()
    _offset = datetime.combine(real.date(), clock_time, timezone.utc) - real


def reset() -> None:
    """Read SAFEROUTE_SIMULATED_TIME. The wall-clock moment it was first read is kept in
    SAFEROUTE_SIMULATED_SINCE and inherited by the processes started from here, so that a bot
    restarted later agrees on the time (each process anchoring to its own start turned the
    clock back at every restart, and leases written before a crash lay in the future)."""
    global _offset
    _offset = timedelta(0)
    if os.environ.get(ENV):
        since = os.environ.get(SINCE)
        at = datetime.fromtimestamp(float(since), timezone.utc) if since else wall()
        os.environ[SINCE] = repr(at.timestamp())
        shift_to(os.environ[ENV], at=at)


reset()
