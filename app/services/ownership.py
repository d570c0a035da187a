"""Which process runs a training session: recorded on the session for operators (see app.worker).

Liveness is no longer judged from these fields: procrastinate's worker heartbeats decide when a
worker is dead, and the worker that notices puts its jobs back in the queue (app.worker.recovery).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Owner:
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
