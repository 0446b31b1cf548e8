"""docs/cli.md documents every command of the `hsmcloud` command tree."""
from __future__ import annotations

from pathlib import Path

import typer

from hsmcloud.cli.main import app

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command of a (Typer-built) click group, as its words."""
    out = []
    for name, command in sorted(group.commands.items()):
        path = prefix + (name,)
        if hasattr(command, "commands"):  # a group (Typer builds them on its own copy of click)
            out += command_paths(command, path)
        else:
            out.append(path)
    return out


def documented(text: str, path: tuple[str, ...]) -> bool:
    """Shown as `hsmcloud <path>` in an example, or as a code span `<path without its group> ...`
    in its group's table (e.g. `deauthorize [--slot N]` under payshield)."""
    if f"hsmcloud {' '.join(path)}" in text:
        return True
    sub = " ".join(path[1:])
    return bool(sub) and (f"`{sub}`" in text or f"`{sub} " in text)


def test_every_command_is_in_cli_md():
    paths = command_paths(typer.main.get_command(app))
    assert ("operator", "licence") in paths and ("payshield", "card", "new") in paths  # the walk sees the tree
    text = CLI_MD.read_text()
    assert [" ".join(p) for p in paths if not documented(text, p)] == []
