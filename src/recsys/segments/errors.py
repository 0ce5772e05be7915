"""Errors of the segment rule language, located by line and column."""

from __future__ import annotations


class RuleError(ValueError):
    """A rule that cannot be loaded: bad syntax, unknown feature, type mismatch.

    Attributes:
        message: what is wrong.
        offset: 0-based position in the rule text.
        line: 1-based line in the source file (or the rule text).
        column: 1-based column.
        source: file name, or ``"<rule>"``.
        segment: the segment whose rule failed, if known.
    """

    def __init__(
        self,
        message: str,
        offset: int = 0,
        line: int | None = None,
        column: int | None = None,
        source: str = "<rule>",
        segment: str | None = None,
    ) -> None:
        self.message = message
        self.offset = offset
        self.line = line if line is not None else 1
        self.column = column if column is not None else offset + 1
        self.source = source
        self.segment = segment
        where = f" (segment {segment!r})" if segment else ""
        super().__init__(f"{source}:{self.line}:{self.column}: {message}{where}")

    def located(self, line: int, column: int, source: str, segment: str | None = None) -> RuleError:
        """The same error placed in a file."""
        return RuleError(self.message, self.offset, line, column, source, segment or self.segment)
