"""Who listens on a TCP port: the kernel's socket table and the processes holding them.

Linux only (/proc); the processes of other users are invisible to an unprivileged
caller, which the answer says rather than guesses.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from fieldline.ops.process import command_line, is_fieldline_command

_LISTEN = "0A"  # TCP state of a listening socket in /proc/net/tcp


@dataclass(frozen=True, slots=True)
class Listener:
    pid: int
    command: str  # its arguments, joined
    fieldline: bool  # fieldline itself, or a server a fieldline process started


@dataclass(frozen=True, slots=True)
class PortOwners:
    """Who holds a port: the processes seen, and whether some socket's holder is unseen."""

    listeners: tuple[Listener, ...]
    unseen: bool


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on `host:port` now (None: it could)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        return exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc
    return None


def in_use(error: OSError | None) -> bool:
    return error is not None and error.errno == errno.EADDRINUSE


def owners(port: int) -> PortOwners | None:
    """The processes listening on `port` on any address; None without /proc."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    found: dict[int, Listener] = {}
    seen_inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        held = _sockets(proc) & inodes
        if held:
            pid = int(proc.name)
            seen_inodes |= held
            args = command_line(pid) or []
            found[pid] = Listener(pid, " ".join(args)[:120], _started_by_fieldline(pid, args))
    return PortOwners(tuple(found.values()), unseen=bool(inodes - seen_inodes))


def _sockets(proc: Path) -> set[str]:
    """The inodes of the sockets a process holds; none when it is another user's."""
    found: set[str] = set()
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:  # another user's process, or gone meanwhile
        return found
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            found.add(link[8:-1])
    return found


def _listening_inodes(port: int) -> set[str] | None:
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    inodes: set[str] = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rpartition(":")[2], 16) == port:
                inodes.add(inode)
    return inodes


def _started_by_fieldline(pid: int, args: list[str]) -> bool:
    """The process or one of its ancestors runs fieldline (`up`'s Mosquitto, say)."""
    while pid > 1:
        if is_fieldline_command(args):
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        # The command name in parentheses may hold spaces: the parent pid follows it.
        pid = int(stat.rpartition(")")[2].split()[1])
        args = command_line(pid) or []
    return False
