"""A LunaCM-style client shell (`hsmcloud lunacm`): slots, partition initialization, roles, policies.

Like Luna's LunaCM it runs on the client side and reaches each partition over NTLS, as the
configured slots say; commands and flags are case-insensitive and may be abbreviated; every
command ends with `Command Result : No Error` or the error's code. One shell keeps its logins
(one PKCS#11 session per slot) until it ends."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hsmcloud.shellgrammar import Command, GrammarError, Group, ParsedLine, parse, tokenize
from hsmcloud.shellgrammar import usage as command_usage

PROMPT = "lunacm:> "
NO_ERROR = "Command Result : No Error"


class LunaCmError(Exception):
    """A command failed; `code` is the CKR name (or a LunaCM-side name) shown in the result line."""

    def __init__(self, message: str, *, code: str = "INVALID_USAGE", value: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.value = value


class Terminal(Protocol):
    @property
    def interactive(self) -> bool: ...

    def write(self, text: str) -> None: ...

    def ask(self, prompt: str, *, secret: bool = False) -> str: ...


@dataclass(frozen=True, kw_only=True)
class Invocation:
    shell: "LunaCmShell"
    line: ParsedLine

    def value(self, key: str) -> str | None:
        v = self.line.values.get(key)
        return v if isinstance(v, str) else None

    def flag(self, key: str) -> bool:
        return bool(self.line.values.get(key))

    def out(self, text: str = "") -> None:
        self.shell.terminal.write(text + "\n")

    def secret(self, key: str, prompt: str, *, confirm: bool = False) -> str:
        given = self.value(key)
        if given is not None:
            return given
        terminal = self.shell.terminal
        if not terminal.interactive:
            raise LunaCmError(f"'{self.line.text}' needs -{key} <value> when run without a terminal.")
        answer = terminal.ask(prompt, secret=True)
        if confirm and terminal.ask("Re-enter to confirm: ", secret=True) != answer:
            raise LunaCmError("The two entries did not match. Nothing was changed.")
        return answer

    def confirm(self, warning: str) -> None:
        if self.flag("force"):
            return
        terminal = self.shell.terminal
        if not terminal.interactive:
            raise LunaCmError(f"'{self.line.text}' is destructive: add -force to run it without a terminal.")
        self.out(warning)
        if terminal.ask("Type 'proceed' to continue, or 'quit' to quit now -> ").strip().lower() != "proceed":
            raise LunaCmError("Command aborted: 'proceed' was not typed. Nothing was changed.", code="ABORTED")


class LunaCmShell:
    def __init__(self, backend, terminal: Terminal, *, commands: Group | None = None):
        if commands is None:
            from hsmcloud.clients.luna.lunacm.commands import COMMANDS
            commands = COMMANDS
        self.backend = backend
        self.terminal = terminal
        self.commands = commands
        self.current_slot: int | None = None
        self.closed = False

    def require_slot(self) -> int:
        if self.current_slot is None:
            slots = self.backend.slots()
            if not slots:
                raise LunaCmError("No slots are configured: connect to a partition first ('hsmcloud client "
                                  "connect', or 'hsmcloud client slot add').", code="NO_SLOTS")
            self.current_slot = slots[0].slot_id
        return self.current_slot

    def banner(self) -> str:
        return "LunaCM (hsmcloud) - the client-side partition and role manager. Type 'help' for the commands.\n"

    def execute(self, text: str) -> int:
        """Run one line; write its output and result line; 0 on success."""
        try:
            tokens = tokenize(text)
        except GrammarError as exc:
            return self._fail(LunaCmError(exc.message))
        if not tokens:
            return 0
        try:
            parsed = parse(tokens, self.commands)
            if parsed.help_requested or isinstance(parsed.node, Group):
                self.terminal.write(self.help_text(parsed.path) + "\n")
            else:
                parsed.node.handler(Invocation(shell=self, line=parsed))
        except LunaCmError as error:
            return self._fail(error)
        except GrammarError as exc:
            return self._fail(LunaCmError(exc.message))
        self.terminal.write(f"\n{NO_ERROR}\n\n")
        return 0

    def _fail(self, error: LunaCmError) -> int:
        value = f"0x{error.value:08x} " if error.value is not None else ""
        self.terminal.write(f"Error: {error.message}\n\nCommand Result : {value}({error.code})\n\n")
        return 1

    def run_lines(self, lines: list[str], *, stop_on_error: bool = True) -> int:
        status = 0
        for line in lines:
            self.terminal.write(f"{PROMPT}{line}\n")
            if self.execute(line) != 0:
                status = 1
                if stop_on_error:
                    break
            if self.closed:
                break
        return status

    def interact(self, read_line: Callable[[str], str | None]) -> int:
        self.terminal.write(self.banner() + "\n")
        while not self.closed:
            line = read_line(PROMPT)
            if line is None:
                break
            self.execute(line)
        return 0

    def help_text(self, path: tuple[str, ...] = ()) -> str:
        node: Group | Command = self.commands
        for word in path:
            assert isinstance(node, Group)
            node = next(c for c in node.children if c.name == word)
        if isinstance(node, Command):
            lines = [node.summary, "", "Usage: " + command_usage(node, path)]
            if node.flags:
                width = max(len(f.usage()) for f in node.flags)
                lines += [""] + [f"  {f.usage():<{width}}  {f.help}" for f in node.flags]
            if node.details:
                lines += ["", node.details]
            return "\n".join(lines)
        width = max(len(c.name) for c in node.children)
        head = f"The following subcommands of '{' '.join(path)}' are available:" if path else \
            "The following commands are available:"
        return "\n".join([head, ""] + [f"  {c.name:<{width}}  {c.summary}" for c in node.children])
