"""Which CPython build runs this process.

The real-time consumer is pure Python, so its CPU per event depends on how the
interpreter was compiled: a build with profile-guided optimization and link-time
optimization and the interpreter linked into its executable (Debian's and
Ubuntu's ``python3.11``, for example) runs the consumer with less CPU per event
than a plain source build that loads ``libpython`` as a shared library (pyenv's
default), and compiling its per-event modules with mypyc (``RECSYS_MYPYC=1``)
saves more; ``docs/realtime_benchmark.md`` (eleventh round) has the measurements. Benchmark
reports record this description so that their numbers can be compared.

Example:
    >>> info = describe()
    >>> sorted(info)
    ['build', 'executable', 'libpython_shared', 'recsys_compiled', 'version']
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def libpython_shared(maps: str | None = None) -> bool | None:
    """Whether ``libpython`` is mapped as a shared library in this process.

    Args:
        maps: text of ``/proc/<pid>/maps``; None reads this process's.

    Returns:
        True or False, or None where ``/proc`` is not available.

    Example:
        >>> libpython_shared("7f0-7f1 r-xp 0 08:01 1 /usr/lib/libpython3.11.so.1.0")
        True
    """
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return None
    return any(
        os.path.basename(line.rsplit(" ", 1)[-1]).startswith("libpython")
        for line in maps.splitlines()
    )


def compiled_modules() -> list[str]:
    """The ``recsys`` modules imported so far that were loaded from C extensions
    (a mypyc build), sorted."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("recsys.")
        and str(getattr(module, "__file__", None) or "").endswith((".so", ".pyd"))
    )


def describe() -> dict[str, Any]:
    """The interpreter's executable (links resolved), version, build string
    (``sys.version``: build date and compiler), :func:`libpython_shared` and
    :func:`compiled_modules`."""
    return {
        "executable": os.path.realpath(sys.executable),
        "version": platform.python_version(),
        "build": sys.version,
        "libpython_shared": libpython_shared(),
        "recsys_compiled": compiled_modules(),
    }
