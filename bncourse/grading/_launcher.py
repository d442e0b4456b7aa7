"""First process started inside the sandbox: set the resource limits, drop root, start the kernel.

Run by path with ``python -I -S`` (no ``bncourse`` import, nothing from the environment), as

    python -I -S _launcher.py LIMITS_JSON UID -- KERNEL_COMMAND...

``LIMITS_JSON`` maps resource names (``"AS"``, ``"NPROC"``, ``"FSIZE"``, ``"CPU"``, ``"NOFILE"``,
``"CORE"``) to a limit. ``UID`` is the user the kernel runs as when the sandbox was started by root
(``0`` or negative: keep the current user; unprivileged bubblewrap already maps it into its own
user namespace). The limits are set *inside* the sandbox's user namespace on purpose: there the
process count of ``RLIMIT_NPROC`` counts only this sandbox's processes, not the instructor's.
"""
from __future__ import annotations

import json
import os
import resource
import sys


def apply_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        which = getattr(resource, f"RLIMIT_{name}")
        resource.setrlimit(which, (int(value), int(value)))


def drop_root(uid: int) -> None:
    """root (the sandbox started by root, without a user namespace) becomes ``uid``, with no capabilities."""
    if uid > 0 and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SystemExit("bncourse sandbox: could not drop root")


def main(argv: list[str]) -> None:
    sep = argv.index("--")
    limits, uid = json.loads(argv[0]), int(argv[1])
    command = argv[sep + 1:]
    apply_limits(limits)
    drop_root(uid)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
