"""How a run shows itself: a live line with a progress bar on a terminal, plain
timestamped lines elsewhere (CI, cron), nothing but errors with --quiet."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TextIO

SYMBOLS = {"done": "✓", "cached": "↺", "failed": "✗", "skipped": "-", "blocked": "■", "interrupted": "!"}


class Reporter:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = (self.stream.isatty() if live is None else live) and not quiet
        self._last_plain: dict[str, tuple[float, int]] = {}
        self._line_open = False

    # -- plain output --------------------------------------------------------
    def _emit(self, text: str) -> None:
        if self._line_open:
            self.stream.write("\r\x1b[2K")
            self._line_open = False
        if not self.live:
            text = f"{datetime.now().strftime('%H:%M:%S')} {text}"
        self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.quiet:
            self._emit(text)

    def error(self, text: str) -> None:
        self._emit(text)

    # -- steps -----------------------------------------------------------------
    def step_started(self, step_id: str) -> None:
        if not self.quiet:
            self._emit(f"▶ {step_id}" if self.live else f"{step_id}: started")

    def step_finished(self, step_id: str, status: str, seconds: float | None, summary: str = "") -> None:
        if self.quiet and status not in ("failed",):
            return
        took = f" ({seconds:.1f}s)" if seconds is not None and status not in ("cached", "skipped") else ""
        tail = f" — {summary}" if summary else ""
        if self.live:
            self._emit(f"{SYMBOLS.get(status, '?')} {step_id} {status}{took}{tail}")
        else:
            self._emit(f"{step_id}: {status}{took}{tail}")

    def progress(self, step_id: str, done: int, total: int | None, what: str) -> None:
        if self.quiet:
            return
        if self.live:
            if total:
                width = 28
                filled = int(width * min(done, total) / total)
                bar = "█" * filled + "░" * (width - filled)
                text = f"  {step_id} {bar} {done}/{total} {what}"
            else:
                text = f"  {step_id} {done} {what}"
            self.stream.write("\r\x1b[2K" + text[:200])
            self.stream.flush()
            self._line_open = True
            return
        # plain: at most one line per 10 s or per 10% per step
        now = time.monotonic()
        last_t, last_pct = self._last_plain.get(step_id, (0.0, -100))
        pct = int(100 * done / total) if total else -1
        if now - last_t >= 10 or (total and pct - last_pct >= 10) or (total and done == total and pct != last_pct):
            self._last_plain[step_id] = (now, pct)
            self._emit(f"{step_id}: {done}/{total} {what}" if total else f"{step_id}: {done} {what}")
