"""Which process owns a training session, and whether that process is still alive.

Every session records its owner as (host name, pid, random per-process instance id). Several hosts
share one database, so a process only ever declares sessions of *its own host* dead, and only when
their owner process is provably gone (pid no longer running, or the pid is ours but the instance id
is not - the usual case when a container restarts with the same pid). Sessions of other hosts are
declared dead only when their owner stopped refreshing `heartbeat_at` for SESSION_STALE_SECONDS.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class Owner:
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    if (_PROC / "self" / "stat").exists():
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return True  # exists but unreadable: assume alive, the heartbeat check covers it
        # The state letter follows the parenthesised command name, which may itself contain spaces.
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_gone(me: Owner, pid: int, instance: str) -> bool:
    """For a session owned by this host: has its owner process gone away?"""
    if instance == me.instance:
        return False
    return pid == me.pid or not pid_alive(pid)
