"""LunaSH's use of the shared command-line grammar (`hsmcloud.shellgrammar`).

The grammar is shared with the client-side LunaCM; here its errors become LunaSH's own, so the
shell reports them like every other refusal."""

from __future__ import annotations

from hsmcloud import shellgrammar
from hsmcloud.shellgrammar import (  # noqa: F401 - re-exported for the LunaSH modules
    HELP_FLAGS,
    Command,
    Flag,
    Group,
    Handler,
    Node,
    ParsedLine,
    loggable,
    loggable_invalid,
    usage,
)

from ..core.errors import InvalidUsage
from .errors import InvalidCommand


def _lunash_error(error: shellgrammar.GrammarError) -> Exception:
    if isinstance(error, shellgrammar.InvalidCommand):
        return InvalidCommand(error.message)
    return InvalidUsage(error.message)


def tokenize(line: str) -> list[str]:
    try:
        return shellgrammar.tokenize(line)
    except shellgrammar.GrammarError as error:
        raise _lunash_error(error) from None


def resolve(words: list[str], root: Group):
    try:
        return shellgrammar.resolve(words, root)
    except shellgrammar.GrammarError as error:
        raise _lunash_error(error) from None


def parse(tokens: list[str], root: Group) -> ParsedLine:
    try:
        return shellgrammar.parse(tokens, root)
    except shellgrammar.GrammarError as error:
        raise _lunash_error(error) from None
