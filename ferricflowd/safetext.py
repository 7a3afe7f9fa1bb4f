"""Text from Flows (ids, errors, results, payloads) shown on a terminal or in a text log.

A handler's error can hold anything, terminal escape sequences included: printed raw, it
could retitle the window, clear the screen or hide lines (ESC, BEL, CSI as U+009B). The CLI's
human output and the text log show every control character escaped instead: ESC as the four
characters `\\x1b`. JSON output needs nothing more: json.dumps escapes them already.
"""

from __future__ import annotations

import functools

__all__ = ["CLI_KEEP", "TRACEBACK_KEEP", "escape_controls"]

# C0 controls, DEL and the C1 controls (U+0080..U+009F: some terminals act on U+009B as CSI)
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0)]
CLI_KEEP = "\t"  # a tab only moves the cursor: an id with tabs prints as it was typed
TRACEBACK_KEEP = "\n\t"  # a traceback keeps its lines and indentation


@functools.cache
def _table(keep: str) -> dict[int, str]:
    return {c: f"\\x{c:02x}" for c in _CONTROLS if chr(c) not in keep}


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with each control character, but those in `keep`, as `\\xNN`."""
    return text.translate(_table(keep))
