"""Which process a hidden temporary belongs to, so that a later write can remove those of dead processes.

An atomic writer removes its temporary on any exception, Ctrl-C and SIGTERM included, but a SIGKILL (the
kernel's out-of-memory killer sends one), a power cut or a crashed interpreter leaves it behind: gigabytes of
hidden ``.scores.….stream.tif`` for a large prediction. Each temporary's name therefore carries an owner token
(a hash of the host name and PID namespace, the PID and the process's start time); a later write of the same
output removes the temporaries whose owner is provably gone.

"Provably" is strict: a token from another host (a shared network folder) or container, or from a system where
liveness cannot be checked without side effects (Windows, where ``os.kill`` terminates) is never judged dead.
The start time tells a reused PID from the process that wrote the file, where ``/proc`` gives it.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket

#: ``HOST-PID-START``: six hex digits of the host's hash (:func:`_host`), the PID, and the start time in clock ticks
#: since boot (0 where the system does not tell it).
TOKEN_PATTERN = r"(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<start>\d+)"


def _host() -> str:
    """The host name, with the PID namespace: containers sharing a host name (``--uts host``) and a folder do not
    see each other's PIDs, so their tokens must differ."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha1(f"{socket.gethostname()}:{namespace}".encode()).hexdigest()[:6]


_HOST = _host()


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; 0 if unknown here; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    return int(fields[19])  # field 22 of proc(5), counted after the command name


def owner_token() -> str:
    """This process's token (read on each call: a forked child is a different owner)."""
    pid = os.getpid()
    return f"{_HOST}-{pid}-{_start_ticks(pid) or 0}"


def owner_is_gone(match: re.Match[str]) -> bool:
    """True only when the owner named by a :data:`TOKEN_PATTERN` match surely no longer runs."""
    if match["host"] != _HOST or os.name == "nt":
        return False
    pid, start = int(match["pid"]), int(match["start"])
    if os.path.isdir("/proc"):
        now = _start_ticks(pid)
        return now is None or (start != 0 and now != 0 and now != start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by another user
        return False
    return False
