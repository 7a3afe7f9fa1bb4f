"""Template filters: times, durations, sizes and URLs as the pages show them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["FILTERS", "flow_url", "url_with"]

_DOT_SEGMENTS = {".", ".."}  # a browser folds them out of a path, so they go in the query


def flow_url(flow_id: str, action: str | None = None) -> str:
    """The page of a Flow (or the URL of one of its actions); any id, slashes included."""
    if flow_id in _DOT_SEGMENTS:
        return f"/flow{'/' + action if action else ''}?{urlencode({'id': flow_id})}"
    return f"/flows/{quote(flow_id, safe='')}{'/' + action if action else ''}"


def url_with(path: str, params: dict[str, Any], **changes: Any) -> str:
    """`path` with the query `params` updated by `changes` (None or "" drops a key)."""
    merged = {**params, **changes}
    query = urlencode({k: v for k, v in merged.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def duration(ms: float | None) -> str:
    """1234 -> "1.2s", 90000 -> "1m30s", 7200000 -> "2h0m"; None -> "-"."""
    if ms is None:
        return "-"
    ms = max(0.0, float(ms))
    if ms < 1000:
        return f"{ms:.0f}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    return f"{h // 24}d{h % 24}h"


def ago(at_ms: int | None, now_ms: int | None = None) -> str:
    if at_ms is None:
        return "-"
    delta = (now_ms if now_ms is not None else time.time() * 1000) - at_ms
    return f"in {duration(-delta)}" if delta < 0 else f"{duration(delta)} ago"


def utc(at_ms: int | None) -> str:
    if at_ms is None:
        return "-"
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def number(n: int | float | None) -> str:
    if n is None:
        return "-"
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


def text(data: bytes | str | None, cap: int = 0) -> str:
    """Bytes as text for display (undecodable bytes as \\x escapes), cut at `cap` chars."""
    if data is None:
        return ""
    out = data if isinstance(data, str) else data.decode("utf-8", "backslashreplace")
    return out if not cap or len(out) <= cap else out[:cap] + "…"


FILTERS = {"flow_url": flow_url, "duration": duration, "ago": ago, "utc": utc, "size": size,
           "number": number, "text": text}
