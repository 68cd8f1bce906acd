"""Reading a socket option of another process's TCP connection (the server's end of a test's client).

The kernel tells /proc/net/tcp which inode a connection between two ports is, /proc/PID/fd which of the
process's descriptors holds that inode, and pidfd_getfd(2) hands the test a duplicate of it, whose
options are the connection's own. Needs ptrace rights over the process (root, or the same user with
ptrace_scope 0); Linux 5.6 or later.
"""

from __future__ import annotations

import ctypes
import os
import socket
from pathlib import Path

_SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux has added it to since 5.6
_libc = ctypes.CDLL(None, use_errno=True)


def _inode(local_port: int, remote_port: int) -> int | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                return inode
    return None


def _fd_of(pid: int, inode: int) -> int | None:
    target = f"socket:[{inode}]"
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(entry.path) == target:
                return int(entry.name)
        except OSError:
            continue  # closed while we looked
    return None


def peer_sockopt(pid: int, client: socket.socket, level: int, option: int) -> int:
    """The option of the connection's other end, held by process `pid` (the server `client` is connected to)."""
    local_port = client.getpeername()[1]  # the server's port is its end's local port
    remote_port = client.getsockname()[1]
    inode = _inode(local_port, remote_port)
    if inode is None:
        raise LookupError(f"no TCP connection :{local_port} <- :{remote_port} in /proc/net/tcp")
    fd = _fd_of(pid, inode)
    if fd is None:
        raise LookupError(f"process {pid} holds no descriptor of socket inode {inode}")
    pidfd = os.pidfd_open(pid)
    try:
        dup = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"pidfd_getfd({pid}, {fd}): {os.strerror(errno)}")
    finally:
        os.close(pidfd)
    with socket.socket(fileno=dup) as theirs:
        return theirs.getsockopt(level, option)
