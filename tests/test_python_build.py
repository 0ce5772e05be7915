"""The interpreter description benchmark reports record."""

from __future__ import annotations

import os
import platform
import sys
from types import ModuleType

from recsys.python_build import compiled_modules, describe, libpython_shared

# /proc/<pid>/maps of a python that loads libpython, and of one that does not.
SHARED = """\
55d0a000-55d0b000 r--p 00000000 08:01 131 /root/.pyenv/versions/3.11.7/bin/python3.11
7f21c000-7f21d000 r-xp 00100000 08:01 141 /root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0
7f21e000-7f21f000 rw-p 00000000 00:00 0
"""
STATIC = """\
55d0a000-55d0b000 r-xp 00000000 08:01 131 /usr/bin/python3.11
7f21c000-7f21d000 r-xp 00100000 08:01 141 /usr/lib/x86_64-linux-gnu/libc.so.6
7f21e000-7f21f000 rw-p 00000000 00:00 0
"""


def test_libpython_shared_reads_the_mapped_files() -> None:
    assert libpython_shared(SHARED) is True
    assert libpython_shared(STATIC) is False
    # A path that merely contains the word is not the library.
    assert libpython_shared(STATIC.replace("/usr/bin", "/opt/libpython-tools/bin")) is False


def test_describe_names_this_interpreter() -> None:
    info = describe()
    assert info["executable"] == os.path.realpath(sys.executable)
    assert info["version"] == platform.python_version()
    assert info["build"] == sys.version
    if os.path.exists("/proc/self/maps"):
        assert isinstance(info["libpython_shared"], bool)


def test_compiled_modules_lists_recsys_extensions_only() -> None:
    ext = ModuleType("recsys._ext_probe")
    ext.__file__ = "/x/recsys/_ext_probe.cpython-311-x86_64-linux-gnu.so"
    other = ModuleType("elsewhere_probe")
    other.__file__ = "/x/elsewhere_probe.cpython-311-x86_64-linux-gnu.so"
    sys.modules.update({ext.__name__: ext, other.__name__: other})
    try:
        found = compiled_modules()
    finally:
        del sys.modules[ext.__name__], sys.modules[other.__name__]
    assert "recsys._ext_probe" in found and "elsewhere_probe" not in found
    assert "recsys.python_build" not in found  # a source module
    assert "recsys._ext_probe" not in compiled_modules()
