"""The appliance's SSH server: password login of ``admin`` into LunaSH, and scp/sftp of files.

An interactive shell (with or without a pty) runs a ``lunash:>`` prompt loop; an exec request
(``ssh admin@host 'hsm show'``) runs one command and exits 0 on success, 1 on error. Every
SSH connection gets one :class:`ShellSession`, so an HSM SO login holds for the exec requests
and shells of that connection and ends with it.

Password guessing is throttled (:mod:`.login_throttle`): checks wait their turn and longer
after failures, a connection is dropped after six wrong passwords, and at most ten
connections may be logging in at once. There is no lockout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncssh

from .... import logredact
from ..core.appliance_core import ApplianceCore
from ..core.passwords import admin_password_matches
from ..core.product import ADMIN_USER, MODEL, PRODUCT_NAME, SOFTWARE_VERSION
from .errors import CommandAborted
from .file_transfer import ApplianceFileServer
from .login_throttle import LoginThrottle
from .shell import PROMPT, ShellSession

logger = logging.getLogger(__name__)

#: LunaSH gives a connecting user 2 minutes to log in.
LOGIN_TIMEOUT_SECONDS = 120
BANNER = (
    f"{PRODUCT_NAME} (model {MODEL}) Command Line Shell v{SOFTWARE_VERSION}"
    " - emulated appliance. Type 'help' for the commands.\n\n"
)


def _printable(text: str, limit: int = 32) -> str:
    """A client-chosen string made safe for one log line."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


class SshTerminal:
    """A :class:`~hsmcloud.appliances.luna.lunash.shell.Terminal` on an SSH channel."""

    def __init__(self, process: asyncssh.SSHServerProcess, *, interactive: bool) -> None:
        self._process = process
        self._interactive = interactive
        self._pty = process.get_terminal_type() is not None

    @property
    def interactive(self) -> bool:
        return self._interactive

    def write(self, text: str) -> None:
        self._process.stdout.write(text)

    async def read_line(self) -> str | None:
        """The next input line without its line end; None at end of input."""
        while True:
            try:
                line = await self._process.stdin.readline()
            except asyncssh.TerminalSizeChanged:
                continue
            return line.rstrip("\r\n") if line else None

    async def ask(self, prompt: str, *, secret: bool = False) -> str:
        self.write(prompt)
        hide = secret and self._pty
        if hide:
            self._process.channel.set_echo(False)
        try:
            line = await self.read_line()
        except (asyncssh.BreakReceived, asyncssh.SignalReceived):
            self.write("\n")
            raise CommandAborted("Interrupted. Nothing was changed.") from None
        finally:
            if hide:
                self._process.channel.set_echo(True)
        if secret and not self._pty:
            self.write("\n")
        if line is None:
            raise CommandAborted("The input ended. Nothing was changed.")
        return line


class _Connection(asyncssh.SSHServer):
    """One SSH connection: authenticates ``admin`` and holds the LunaSH session."""

    def __init__(self, service: LunaSshService) -> None:
        self._service = service
        self._conn: asyncssh.SSHServerConnection | None = None
        self.origin = "unknown"
        self.shell: ShellSession | None = None
        self._password_attempts = 0

    @property
    def core(self) -> ApplianceCore:
        return self._service.core

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("unknown", 0)
        self.origin = f"{peer[0]}/{peer[1]}"
        service = self._service
        service.connections.add(conn)
        limit = service.throttle.policy.max_unauthenticated
        if len(service.unauthenticated) >= limit:
            service.state.append_log(
                f"sshd: drop connection from {peer[0]} port {peer[1]}: {limit} connections are already logging in"
            )
            asyncio.get_running_loop().call_soon(conn.abort)
            return
        service.unauthenticated.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._service.connections.discard(self._conn)
            self._service.unauthenticated.discard(self._conn)

    def auth_completed(self) -> None:
        if self._conn is not None:
            self._service.unauthenticated.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        service = self._service
        state = service.state
        epoch = service.epoch
        self._password_attempts += 1
        host, _, port = self.origin.partition("/")

        async def verify() -> bool:
            if username != ADMIN_USER:
                return False  # an unknown user waits its turn and counts as a failure, like a wrong password
            return await admin_password_matches(password, state.device().admin_password_hash)

        ok = await service.throttle.check(host, verify)
        if service.epoch != epoch:
            return False  # sessions were ended (reset, stop) while the password was checked
        user = username if username == ADMIN_USER else "invalid user " + _printable(username)
        verdict = "Accepted" if ok else "Failed"
        state.append_log(f"sshd: {verdict} password for {user} from {host} port {port} ssh2")
        if ok:
            self.shell = ShellSession(
                self._service.core, user=ADMIN_USER, origin=self.origin, ntls=self._service.ntls
            )
            return True
        wait = service.throttle.wait(host)
        if wait > 0:
            state.append_log(
                f"sshd: {service.throttle.failures(host)} failed logins in a row from {host}: "
                f"the next password check waits {wait:.0f} s"
            )
        if self._password_attempts >= service.throttle.policy.max_auth_tries:
            state.append_log(
                f"sshd: Disconnecting: Too many authentication failures for {user} from {host} port {port} ssh2"
            )
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures"
            )
        return False


class LunaSshService:
    """The SSH listener of one appliance and the sessions it serves."""

    def __init__(self, core: ApplianceCore, *, ntls: object | None = None,
                 throttle: LoginThrottle | None = None) -> None:
        self.core = core
        self.state = core.state
        #: The NTLS listener, shown by ``ntls show``.
        self.ntls = ntls
        self.throttle = throttle or LoginThrottle()
        self.connections: set[asyncssh.SSHServerConnection] = set()
        #: Connections that have not logged in yet (their number is capped).
        self.unauthenticated: set[asyncssh.SSHServerConnection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.serial = self.state.device().serial
        #: Bumped whenever sessions are ended, so a login checked before that is refused.
        self.epoch = 0

    async def start(self, address: str, port: int) -> int:
        """Listen on (address, port); returns the bound port."""
        logredact.install()  # asyncssh logs command lines and, at its debug level 3, passwords
        self._acceptor = await asyncssh.listen(
            address,
            port,
            server_factory=lambda: _Connection(self),
            server_host_keys=[asyncssh.import_private_key(self.state.device().ssh_host_key)],
            process_factory=self._serve,
            encoding="utf-8",
            line_editor=True,
            allow_pty=True,
            sftp_factory=ApplianceFileServer,
            allow_scp=True,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=LOGIN_TIMEOUT_SECONDS,
            reuse_address=True,
        )
        return self._acceptor.get_port()

    def logged_in_sessions(self) -> int:
        """How many connections have a logged-in admin."""
        return sum(
            1
            for conn in self.connections
            if isinstance(owner := conn.get_owner(), _Connection) and owner.shell is not None
        )

    def use_host_key(self, host_key: str) -> None:
        """Present ``host_key`` to every connection from now on."""
        if self._acceptor is not None:
            self._acceptor.update(server_host_keys=[asyncssh.import_private_key(host_key)])

    async def end_sessions(self) -> None:
        """Disconnect every client and stop every command still running."""
        self.epoch += 1
        for conn in list(self.connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), timeout=5)
        self.connections.clear()
        self.unauthenticated.clear()

    async def stop(self) -> None:
        """Stop listening, disconnect everyone; the port is free afterwards."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        await self.end_sessions()

    async def _serve(self, process: asyncssh.SSHServerProcess) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            conn = process.get_extra_info("connection")
            owner = conn.get_owner()
            assert isinstance(owner, _Connection) and owner.shell is not None
            status = await self._run(process, owner.shell)
            process.exit(status)
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            pass  # the client went away
        except Exception:
            logger.exception("LunaSH session on appliance %s failed", self.serial)
            with contextlib.suppress(Exception):
                process.stdout.write("Error: internal appliance error; see the appliance log.\n")
                process.exit(1)
        finally:
            self._tasks.discard(task)

    @staticmethod
    async def _run(process: asyncssh.SSHServerProcess, shell: ShellSession) -> int:
        has_pty = process.get_terminal_type() is not None
        if process.command is not None:
            terminal = SshTerminal(process, interactive=has_pty)
            return 0 if await shell.execute(process.command, terminal) == 0 else 1
        # A shell without a pty reads commands (and answers) line by line from stdin.
        terminal = SshTerminal(process, interactive=True)
        if has_pty:
            terminal.write(BANNER)
            await shell.first_login(terminal)
        while not shell.closed:
            terminal.write(PROMPT)
            try:
                line = await terminal.read_line()
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                terminal.write("\n")
                continue
            if line is None:
                break
            await shell.execute(line, terminal)
        return 0
