"""A file the serving side reloads when it changes, without a restart.

:class:`ReloadingFile` holds what a loader made of a file (targeting rules, a bandit's
state, ...). Every :meth:`ReloadingFile.current` call, at most every ``check_s``
seconds, compares the file's modification time and size with the last load; when they
changed, the loader runs again. A file that fails to load keeps the previous value
serving; the error goes to ``warn`` and stays in :attr:`ReloadingFile.last_error`. The
first load must succeed.

Standard library only (the module runs inside Triton's python backend).

Example:
    >>> import json, tempfile
    >>> path = tempfile.mktemp()
    >>> _ = open(path, "w").write('{"a": 1}')
    >>> settings = ReloadingFile(path, lambda p: json.load(open(p)), "settings")
    >>> settings.current()["a"]
    1
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReloadingFile(Generic[T]):
    """See the module docstring.

    Args:
        path: the file.
        load: ``path -> value``; raises on a file it cannot use.
        what: what the file is, for messages (``"targeting rules"``).
        check_s: seconds between checks of the file.
        warn: called with a message when a changed file fails to load.

    Raises:
        ValueError: the first load failed (the message names the file and the error).
    """

    def __init__(
        self,
        path: str,
        load: Callable[[str], T],
        what: str,
        check_s: float = 1.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = str(path)
        self.load = load
        self.what = what
        self.check_s = check_s
        self.warn = warn or (lambda message: None)
        self.loads = 0
        self.failures = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._next_check = 0.0
        try:
            self._stamp: tuple[int, int] | None = self._stat()
            self._value = load(self.path)
        except Exception as error:
            raise ValueError(f"{what} {self.path}: {error}") from error
        self.loads = 1

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    def _reload(self) -> None:
        try:
            stamp = self._stat()
        except OSError as error:
            self.last_error = f"{self.what} {self.path}: {error}"
            self.warn(self.last_error)
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            value = self.load(self.path)
        except Exception as error:  # keep serving the previous value
            self.failures += 1
            self.last_error = f"{self.what} not reloaded, keeping the previous ones: {error}"
            self.warn(self.last_error)
            return
        self._value = value
        self.loads += 1
        self.last_error = None

    def invalidate(self) -> None:
        """Loads the file again at the next :meth:`current`, changed or not (what it
        compiles against changed, e.g. the catalogue grew)."""
        with self._lock:
            self._stamp = None
            self._next_check = 0.0

    def current(self) -> T:
        """The value in force (reloaded first when the file changed)."""
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._next_check = now + self.check_s
                    self._reload()
        return self._value
