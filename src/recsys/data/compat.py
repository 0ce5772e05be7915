"""Names of Python 3.11's standard library, also on Python 3.10.

The project runs on Python 3.11, but the modules that Triton's python backend imports
(the ``recommend`` entry point and what it reads: the feature schema, the event and
profile stores) also run in NVIDIA's serving container, which has Python 3.10. Those
modules take ``StrEnum`` and ``UTC`` from here.

Example:
    >>> from recsys.data.compat import StrEnum
    >>> class Color(StrEnum):
    ...     RED = "red"
    >>> f"{Color.RED}", Color.RED == "red"
    ('red', True)
"""

from __future__ import annotations

import sys
from datetime import timezone
from enum import Enum

UTC = timezone.utc  # noqa: UP017 (datetime.UTC is new in 3.11)

if sys.version_info >= (3, 11):  # noqa: UP036
    from enum import StrEnum
else:

    class StrEnum(str, Enum):  # noqa: UP042
        """``enum.StrEnum`` of Python 3.11: members compare and print as their values."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


__all__ = ["UTC", "StrEnum"]
