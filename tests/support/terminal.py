"""A command run on a real terminal: a pseudo-terminal (the pty module) holding its stdout
and stderr, as a person's shell would, for what a command shows only on a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from pathlib import Path


def on_pty(
    *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str]:
    """Run argv with stdout and stderr on a pseudo-terminal; its exit code and screen."""
    master, slave = pty.openpty()
    # A terminal 100 columns wide, as a window has (a new pty is 0 x 0).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        argv, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=cwd, env=env
    )
    os.close(slave)
    screen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                raise TimeoutError(f"no output within {timeout} s: {screen[-500:]!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(master)
        code = proc.wait(timeout)
    return code, screen.decode(errors="replace")
