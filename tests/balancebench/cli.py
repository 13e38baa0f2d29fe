"""The `balancebench` command as the end-to-end tests start it: this interpreter, text pipes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def start_balancebench(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """``python -m balancebench ARGS`` with stdout and stderr piped (override either through ``popen``)."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, "-m", "balancebench", *args], text=True, **options)
