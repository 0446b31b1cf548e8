"""Command-line grammar of the appliance and client shells (LunaSH, LunaCM): the command tree, flags, parsing.

Like LunaSH and LunaCM, command words and flag names are case-insensitive and may be abbreviated to
any unambiguous prefix (``hsm sh`` is ``hsm show``, ``-par`` is ``-partition``).
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Union



class GrammarError(Exception):
    """A command line that does not fit the command tree; shells show `message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCommand(GrammarError):
    """The command or subcommand does not exist (or a prefix is ambiguous)."""


class InvalidUsage(GrammarError):
    """Unknown, missing, repeated or malformed flags or values."""


#: What a shell calls for a command: LunaSH's handlers are coroutines, LunaCM's plain functions.
Handler = Callable[..., Awaitable[None] | None]

#: Flags that ask for a command's usage instead of running it.
HELP_FLAGS = frozenset({"-help", "-?", "-h"})


@dataclass(frozen=True, kw_only=True)
class Flag:
    """One ``-name [value]`` option of a command."""

    name: str
    metavar: str = ""
    takes_value: bool = True
    required: bool = False
    #: Secret values are never echoed to logs.
    secret: bool = False
    help: str = ""

    @property
    def key(self) -> str:
        return self.name.lower()

    def usage(self) -> str:
        text = f"-{self.name}" + (f" <{self.metavar or self.name}>" if self.takes_value else "")
        return text if self.required else f"[{text}]"


@dataclass(frozen=True, kw_only=True)
class Command:
    """A runnable command (a leaf of the tree)."""

    name: str
    summary: str
    handler: Handler
    flags: tuple[Flag, ...] = ()
    #: Free words after the command (only ``help`` takes them).
    takes_words: bool = False
    #: Runnable while the admin's factory password still has to be changed.
    allowed_before_password_change: bool = False
    details: str = ""
    example: str = ""

    def flag(self, key: str) -> Flag:
        return next(f for f in self.flags if f.key == key)


@dataclass(frozen=True, kw_only=True)
class Group:
    """A command word that only groups others (``hsm``, ``partition``, ...)."""

    name: str
    summary: str
    children: tuple[Union["Group", Command], ...] = field(default_factory=tuple)
    allowed_before_password_change: bool = False


Node = Union[Group, Command]


@dataclass(frozen=True, kw_only=True)
class ParsedLine:
    """A resolved input line: the node reached, its canonical path, and the flag values."""

    node: Node
    path: tuple[str, ...]
    values: dict[str, str | bool]
    words: tuple[str, ...] = ()
    help_requested: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.path)


def tokenize(line: str) -> list[str]:
    """Split a command line like a shell does (quotes group words with spaces)."""
    try:
        return shlex.split(line, posix=True)
    except ValueError as exc:
        raise InvalidUsage(f"The command line could not be read: {exc}.") from None


def _match(word: str, nodes: tuple[Node, ...]) -> Node | None:
    lowered = word.lower()
    by_name = {node.name.lower(): node for node in nodes}
    if lowered in by_name:
        return by_name[lowered]
    hits = [name for name in by_name if name.startswith(lowered)]
    if len(hits) > 1:
        names = ", ".join(by_name[h].name for h in sorted(hits))
        raise InvalidCommand(f"'{word}' is ambiguous: it could be {names}.")
    return by_name[hits[0]] if hits else None


def _match_flag(token: str, command: Command, path: str) -> Flag:
    lowered = token[1:].lower()
    exact = [f for f in command.flags if f.key == lowered]
    if not lowered:
        hits: list[Flag] = []
    else:
        hits = exact or [f for f in command.flags if f.key.startswith(lowered)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        names = ", ".join("-" + f.name for f in hits)
        raise InvalidUsage(f"'{token}' is ambiguous for '{path}': it could be {names}.")
    raise InvalidUsage(
        f"'{token}' is not a valid option for '{path}'. Type '{path} -help' for its usage."
    )


def resolve(words: list[str], root: Group) -> tuple[Node, tuple[str, ...], list[str]]:
    """Walk the command tree along ``words``; returns the node, its path and leftover tokens."""
    node: Node = root
    path: list[str] = []
    index = 0
    while isinstance(node, Group) and index < len(words) and not words[index].startswith("-"):
        child = _match(words[index], node.children)
        if child is None:
            if not path:
                raise InvalidCommand(
                    f"'{words[index]}' is not a valid command. Type 'help' for a list."
                )
            parent = " ".join(path)
            raise InvalidCommand(
                f"'{words[index]}' is not a valid subcommand of '{parent}'. "
                f"Type 'help {parent}' for a list."
            )
        node = child
        path.append(child.name)
        index += 1
    return node, tuple(path), words[index:]


def parse(tokens: list[str], root: Group) -> ParsedLine:
    """Resolve ``tokens`` against the command tree and read the command's flags."""
    node, path, rest = resolve(tokens, root)
    text = " ".join(path)
    if any(t.lower() in HELP_FLAGS for t in rest):
        return ParsedLine(node=node, path=path, values={}, help_requested=True)
    if isinstance(node, Group):
        if rest:
            raise InvalidUsage(
                f"'{text}' needs a subcommand before options. Type 'help {text}' for a list."
            )
        return ParsedLine(node=node, path=path, values={})
    values: dict[str, str | bool] = {}
    words: list[str] = []
    index = 0
    while index < len(rest):
        token = rest[index]
        index += 1
        if not token.startswith("-") or token == "-":
            if node.takes_words:
                words.append(token)
                continue
            raise InvalidUsage(
                f"Unexpected argument '{token}' for '{text}'. Type '{text} -help' for its usage."
            )
        flag = _match_flag(token, node, text)
        if flag.key in values:
            raise InvalidUsage(f"-{flag.name} was given more than once.")
        if flag.takes_value:
            if index >= len(rest):
                raise InvalidUsage(f"-{flag.name} needs a value: -{flag.name} <{flag.metavar}>.")
            values[flag.key] = rest[index]
            index += 1
        else:
            values[flag.key] = True
    for flag in node.flags:
        if flag.required and flag.key not in values:
            raise InvalidUsage(
                f"'{text}' needs -{flag.name} <{flag.metavar}>. Usage: {usage(node, path)}"
            )
    return ParsedLine(node=node, path=path, values=values, words=tuple(words))


def usage(command: Command, path: tuple[str, ...]) -> str:
    """One-line usage, e.g. ``hsm init -label <label> [-domain <domain>] [-force]``."""
    parts = [" ".join(path)]
    if command.takes_words:
        parts.append("[<command> ...]")
    parts.extend(f.usage() for f in command.flags)
    return " ".join(parts)


def loggable(line: ParsedLine) -> str:
    """The command as the appliance log records it: secret values masked."""
    parts = [line.text, *line.words]
    node = line.node
    if isinstance(node, Command):
        for flag in node.flags:
            if flag.key not in line.values:
                continue
            if flag.takes_value:
                value = "********" if flag.secret else shlex.quote(str(line.values[flag.key]))
                parts.append(f"-{flag.name} {value}")
            else:
                parts.append(f"-{flag.name}")
    return " ".join(parts)


def loggable_invalid(tokens: list[str], root: Group) -> str:
    """What the log records for a line that did not parse.

    Only the leading words that name real commands are kept: a mistyped line may well be a
    password typed at the wrong prompt, and the log must never hold one.
    """
    node: Node = root
    known: list[str] = []
    for token in tokens:
        if not isinstance(node, Group) or token.startswith("-"):
            break
        try:
            child = _match(token, node.children)
        except InvalidCommand:
            child = None
        if child is None:
            break
        known.append(child.name)
        node = child
    return " ".join([*known, "<invalid>"])
