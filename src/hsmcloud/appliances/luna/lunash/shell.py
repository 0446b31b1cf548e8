"""The LunaSH session: runs command lines against the appliance state, with LunaSH's rules.

Pure and transport-free: an SSH channel, a test, or anything else drives it through a
:class:`Terminal`. One :class:`ShellSession` is one login (one SSH connection); the HSM SO
login lives here, so it ends with the connection.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol

from ..core.appliance_core import ApplianceCore
from ..core.errors import InvalidUsage, LunaApplianceError, NotLoggedIn
from ..core.passwords import admin_password_matches
from ..core.product import ADMIN_USER
from ..core.state import ApplianceState, HsmRecord
from .command_line import Command, Group, ParsedLine, loggable, loggable_invalid, parse, tokenize
from .command_line import usage as command_usage
from .errors import CommandAborted, ConfirmationRequired, PasswordChangeRequired, result_of

SUCCESS_LINE = "Command Result : 0 (Success)"
PROMPT = "lunash:>"
PASSWORD_CHANGE_NEEDED = (
    "You must change the admin password before running other commands. Use: my password set"
)


class Terminal(Protocol):
    """Where a session writes output and, when someone is there to answer, asks questions."""

    @property
    def interactive(self) -> bool:
        """True when a person (or a pty-driven script) can answer prompts."""

    def write(self, text: str) -> None:
        """Write output text (``\\n`` line ends)."""

    async def ask(self, prompt: str, *, secret: bool = False) -> str:
        """Show ``prompt`` and return the answer line; ``secret`` answers are not echoed.

        Raises :class:`CommandAborted` if the input ends or is interrupted.
        """


@dataclass(frozen=True, kw_only=True)
class Invocation:
    """One parsed command being run: what handlers receive."""

    session: ShellSession
    terminal: Terminal
    line: ParsedLine

    @property
    def command(self) -> Command:
        assert isinstance(self.line.node, Command)
        return self.line.node

    @property
    def text(self) -> str:
        return self.line.text

    @property
    def state(self) -> ApplianceState:
        return self.session.state

    @property
    def core(self) -> ApplianceCore:
        return self.session.core

    def value(self, key: str) -> str | None:
        value = self.line.values.get(key)
        return value if isinstance(value, str) else None

    def flag(self, key: str) -> bool:
        return bool(self.line.values.get(key))

    def out(self, text: str = "") -> None:
        self.terminal.write(text + "\n")

    async def secret(self, key: str, prompt: str, *, confirm_prompt: str | None = None) -> str:
        """The value of secret flag ``-key``, or, on a terminal, an answer typed without echo."""
        given = self.value(key)
        if given is not None:
            return given
        if not self.terminal.interactive:
            flag = self.command.flag(key)
            raise InvalidUsage(
                f"'{self.text}' needs -{flag.name} <{flag.metavar}> when run without a "
                "terminal (for example as an ssh command)."
            )
        answer = await self.terminal.ask(prompt, secret=True)
        if confirm_prompt is not None:
            again = await self.terminal.ask(confirm_prompt, secret=True)
            if not hmac.compare_digest(answer.encode(), again.encode()):
                raise InvalidUsage("The two entries did not match. Nothing was changed.")
        return answer

    async def confirm(self, warning: str) -> None:
        """LunaSH's guard on destructive commands: type 'proceed', or give -force."""
        if self.flag("force"):
            return
        if not self.terminal.interactive:
            raise ConfirmationRequired(
                f"'{self.text}' is destructive and asks you to type 'proceed'; without a "
                "terminal, add -force to run it."
            )
        self.out(warning)
        answer = await self.terminal.ask(
            "Type 'proceed' to continue, or 'quit' to quit now -> ", secret=False
        )
        if answer.strip().lower() != "proceed":
            raise CommandAborted("Command aborted: 'proceed' was not typed. Nothing was changed.")

    def require_so(self, hsm: HsmRecord) -> None:
        """Refuse unless the HSM SO logged in, in this session, to this very HSM."""
        if not self.session.so_logged_in(hsm):
            raise NotLoggedIn(
                f"'{self.text}' needs the HSM SO to be logged in. Use: hsm login"
            )


class ShellSession:
    """One LunaSH login of the appliance ``admin``."""

    def __init__(
        self,
        core: ApplianceCore,
        *,
        user: str = ADMIN_USER,
        origin: str = "Console",
        commands: Group | None = None,
        ntls: object | None = None,
    ) -> None:
        if commands is None:
            # Imported here: the command handlers import this module for Invocation.
            from .commands import COMMANDS

            commands = COMMANDS
        self.core = core
        self.state = core.state
        self.user = user
        self.origin = origin
        self.commands = commands
        #: Shown in log lines where lunash shows its per-login process id.
        self.session_id = 1000 + secrets.randbelow(31000)
        self.closed = False
        self._so_generation: int | None = None
        self._auditor_login: str | None = None
        #: The running NTLS listener, for ``ntls show`` (None when there is none).
        self.ntls = ntls

    # -- HSM SO login of this session ---------------------------------------------------

    def so_logged_in(self, hsm: HsmRecord | None = None) -> bool:
        """True if this session's SO login is for the HSM as it is now (not zeroized since)."""
        hsm = hsm or self.state.hsm()
        return hsm.initialized and self._so_generation == hsm.generation

    def so_login(self, generation: int) -> None:
        self._so_generation = generation

    def so_logout(self) -> bool:
        was = self._so_generation is not None
        self._so_generation = None
        return was

    # -- Auditor login of this session --------------------------------------------------

    def auditor_login(self, initialized_at: str | None) -> None:
        self._auditor_login = initialized_at

    def auditor_logged_in(self, initialized_at: str | None) -> bool:
        """True if the Auditor logged in here, to the Audit role as it is now."""
        return self._auditor_login is not None and self._auditor_login == initialized_at

    def auditor_logout(self) -> bool:
        was = self._auditor_login is not None
        self._auditor_login = None
        return was

    # -- the appliance admin ------------------------------------------------------------

    def password_change_pending(self) -> bool:
        return self.state.device().admin_must_change

    async def check_admin_password(self, password: str) -> bool:
        """True if ``password`` is the admin's current password (factory or set)."""
        return await admin_password_matches(password, self.state.device().admin_password_hash)

    def log(self, line: str) -> None:
        self.state.append_log(line)

    def log_command(self, text: str) -> None:
        self.log(
            f"lunash [{self.session_id}]: info : 0 : Command: {text} : {self.user} : {self.origin}"
        )

    # -- running commands ---------------------------------------------------------------

    async def execute(self, line: str, terminal: Terminal) -> int:
        """Run one command line; write its output and result line; return the result code."""
        try:
            tokens = tokenize(line)
        except LunaApplianceError as error:
            self.log_command("<invalid>")
            return self._fail(terminal, error)
        if not tokens:
            return 0
        try:
            parsed = parse(tokens, self.commands)
        except LunaApplianceError as error:
            self.log_command(loggable_invalid(tokens, self.commands))
            return self._fail(terminal, error)
        self.log_command(loggable(parsed))
        try:
            if parsed.help_requested or isinstance(parsed.node, Group):
                terminal.write(self.help_text(parsed.path) + "\n")
            else:
                if (
                    not parsed.node.allowed_before_password_change
                    and self.password_change_pending()
                ):
                    raise PasswordChangeRequired(PASSWORD_CHANGE_NEEDED)
                await parsed.node.handler(
                    Invocation(session=self, terminal=terminal, line=parsed)
                )
        except LunaApplianceError as error:
            return self._fail(terminal, error)
        terminal.write(f"\n{SUCCESS_LINE}\n")
        return 0

    @staticmethod
    def _fail(terminal: Terminal, error: LunaApplianceError) -> int:
        code, meaning = result_of(error)
        terminal.write(f"Error: {error.message}\n\nCommand Result : {code} ({meaning})\n")
        return code

    async def first_login(self, terminal: Terminal) -> None:
        """On an interactive login with the initial password, ask for a new one straight away."""
        if terminal.interactive and self.password_change_pending():
            terminal.write(
                "The admin password is still the initial one and must be changed "
                "before any other command.\n"
            )
            await self.execute("my password set", terminal)

    # -- help ---------------------------------------------------------------------------

    def help_text(self, path: tuple[str, ...] = ()) -> str:
        """Help for the whole shell, a command group, or one command."""
        node: Group | Command = self.commands
        for word in path:
            assert isinstance(node, Group)
            node = next(c for c in node.children if c.name == word)
        if isinstance(node, Command):
            lines = [node.summary, "", "Usage: " + command_usage(node, path)]
            if node.flags:
                lines.append("")
                width = max(len(f.usage()) for f in node.flags)
                lines += [f"  {f.usage():<{width}}  {f.help}" for f in node.flags]
            if node.details:
                lines += ["", node.details]
            if node.example:
                lines += ["", "Example: " + node.example]
            return "\n".join(lines)
        title = " ".join(path)
        lines = [
            f"The following subcommands of '{title}' are available:"
            if path
            else "The following commands are available:",
            "",
        ]
        width = max(len(c.name) for c in node.children)
        lines += [f"  {c.name:<{width}}  {c.summary}" for c in node.children]
        lines += [
            "",
            "Type 'help <command>' for more, e.g. 'help hsm init'. "
            "Commands and options may be abbreviated.",
        ]
        return "\n".join(lines)
