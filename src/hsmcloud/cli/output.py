"""What the command line prints: JSON or tables on stdout, progress and errors on stderr.

Errors are always exactly one line (`error: <code>: <message>`), written without rich so that
no terminal width ever wraps them."""
from __future__ import annotations

import json
import sys
import time
import unicodedata
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

TERMINAL_STATES = ("Succeeded", "Failed", "Canceled")
STATE_STYLES = {"Succeeded": "green", "Failed": "red", "Canceled": "red", "Deleting": "yellow",
                "Updating": "yellow"}


def _stdout_console() -> Console:
    # Created per use so that whatever sys.stdout is right now (a pipe, a test runner) is used.
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(file=sys.stdout, highlight=False, width=200, no_color=True)
    return console


def _stderr_console() -> Console:
    console = Console(file=sys.stderr, highlight=False)
    if not console.is_terminal:
        console = Console(file=sys.stderr, highlight=False, width=200, no_color=True)
    return console


def visible(text: str) -> str:
    """Control and format characters (a name given as $'\\x01', a terminal escape, a bidi override) as
    \\xNN / \\uNNNN, so that what the user gave reads back as it was and never acts on the terminal."""
    out = []
    for ch in text:
        if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def styled_state(state: str | None) -> Text:
    state = state or "-"
    return Text(state, style=STATE_STYLES.get(state, "cyan"))


class Output:
    """One command's output channel; `json_mode` is the --json flag."""

    NO_WRAP = {"Fill", "State", "Kind"}

    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode

    # ---- stdout ---------------------------------------------------------------------------
    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        sys.stdout.flush()

    def result(self, data: Any, human=None) -> None:
        """Print `data` as JSON under --json, else call `human(data)` (or print it as JSON if none)."""
        if self.json_mode or human is None:
            self.emit_json(data)
        else:
            human(data)

    def print(self, *items: Any, **kwargs: Any) -> None:
        # soft_wrap: long resource ids are left for the terminal to wrap, so they copy and paste whole.
        kwargs.setdefault("soft_wrap", not any(isinstance(i, (Table, Tree)) for i in items))
        _stdout_console().print(*items, **kwargs)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
              empty: str = "(none)") -> None:
        rows = list(rows)
        if not rows:
            self.print(empty)
            return
        t = Table(title=title, show_edge=False, header_style="bold", pad_edge=False, box=None)
        for col in columns:
            t.add_column(col, overflow="fold", no_wrap=col in self.NO_WRAP)
        for row in rows:
            t.add_row(*[c if isinstance(c, Text) else Text("-" if c is None or c == "" else str(c)) for c in row])
        self.print(t)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """Aligned `key: value` lines."""
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            text = Text()
            text.append(f"{key + ':':<{width + 1}} ", style="bold")
            text.append_text(value if isinstance(value, Text) else Text("-" if value in (None, "") else str(value)))
            self.print(text)

    # ---- stderr ---------------------------------------------------------------------------
    def note(self, message: str, *, style: str | None = None) -> None:
        """Progress and hints for people: stderr, so that stdout stays clean for --json."""
        _stderr_console().print(Text(message, style=style or ""), soft_wrap=True)

    def warn(self, message: str) -> None:
        _stderr_console().print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)

    @staticmethod
    def error(code: str, message: str) -> None:
        line = " ".join(visible(f"error: {code}: {message}").split())
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def progress(self, label: str) -> "Progress":
        return Progress(self, label)


class Progress:
    """A live status line (spinner, current state, elapsed time) on a terminal; plain state-change
    lines on stderr otherwise (and nothing at all under --json when stderr is not a terminal)."""

    def __init__(self, out: Output, label: str):
        self.out = out
        self.label = label
        self.console = _stderr_console()
        self.live = self.console.is_terminal
        self.quiet = out.json_mode and not self.live
        self._status = None
        self._state: str | None = None
        self._start = time.monotonic()

    def __enter__(self) -> "Progress":
        if self.live:
            self._status = self.console.status(self._text(None), spinner="dots")
            self._status.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _text(self, state: str | None) -> Text:
        t = Text(f"{self.label}: ", style="bold")
        t.append_text(styled_state(state) if state else Text("waiting", style="dim"))
        t.append(f"  ({time.monotonic() - self._start:.0f}s)", style="dim")
        return t

    def update(self, state: str | None, detail: str | None = None) -> None:
        changed = state != self._state
        self._state = state
        if changed and not self.quiet:
            line = Text("  • ", style="dim") + styled_state(state)
            if detail:
                line.append(f"  {detail}", style="dim")
            self.console.print(line, soft_wrap=True)
        if self._status is not None:
            self._status.update(self._text(state))

    def tick(self) -> None:
        if self._status is not None:
            self._status.update(self._text(self._state))


def bar(percent: float, width: int = 10) -> Text:
    """A fill bar such as `██████░░░░ 58.3%`, coloured by how full it is."""
    percent = max(0.0, min(100.0, float(percent or 0)))
    filled = round(width * percent / 100)
    style = "green" if percent < 70 else ("yellow" if percent < 90 else "red")
    t = Text("█" * filled, style=style)
    t.append("░" * (width - filled), style="dim")
    t.append(f" {percent:5.1f}%")
    return t


def parse_resource_id(rid: str | None) -> dict:
    """{'subscriptions': ..., 'resourceGroups': ..., ...} from an ARM id (keys as written, case kept)."""
    parts = [p for p in (rid or "").split("/") if p]
    out = {}
    for i in range(0, len(parts) - 1, 2):
        out[parts[i].lower()] = parts[i + 1]
    return out
