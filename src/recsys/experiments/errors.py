"""The error of an experiments file that cannot be loaded, located by file, line and column."""

from __future__ import annotations


class ExperimentConfigError(ValueError):
    """An experiments file is wrong; the message starts with ``file:line:column``.

    The same shape as :class:`recsys.segments.errors.RuleError` (message, line, column,
    source), so tools that report one report the other.

    Attributes:
        message: what is wrong.
        line: 1-based line in the file.
        column: 1-based column.
        source: the file name, or ``"<experiments>"``.

    Example:
        >>> str(ExperimentConfigError("unknown key 'arm'", 3, 5, "ab.yaml"))
        "ab.yaml:3:5: unknown key 'arm'"
    """

    def __init__(
        self, message: str, line: int = 1, column: int = 1, source: str = "<experiments>"
    ) -> None:
        self.message = message
        self.line = line
        self.column = column
        self.source = source
        super().__init__(f"{source}:{line}:{column}: {message}")
