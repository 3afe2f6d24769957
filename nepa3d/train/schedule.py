"""Size schedules such as ``"0:256,10:512"`` (epoch:value, sorted by epoch)."""

from __future__ import annotations


class ScheduleError(ValueError):
    pass


def parse_schedule(text: str) -> list[tuple[int, int]]:
    """'0:256,51:512' -> [(0, 256), (51, 512)]; '' -> []."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise ScheduleError(f"schedule item {part!r} has no ':' (expected 'epoch:value')")
        ep, val = part.split(":", 1)
        try:
            out.append((int(ep), int(val)))
        except ValueError as e:
            raise ScheduleError(f"schedule item {part!r}: {e}") from e
    return sorted(out)


def value_at(schedule: list[tuple[int, int]], epoch: int, default: int) -> int:
    """Value of the last item with ep <= epoch, else ``default``."""
    val = default
    for ep, v in schedule:
        if ep <= epoch:
            val = v
    return val
