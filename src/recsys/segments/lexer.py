"""Tokens of the segment rule language.

Example:
    >>> [t.text for t in tokenize("count(page_view, 24h) >= 5")]
    ['count', '(', 'page_view', ',', '24h', ')', '>=', '5', '']
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recsys.segments.errors import RuleError

KEYWORDS = frozenset({"and", "or", "not", "in", "between", "true", "false"})

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<duration>\d+[mhd](?![A-Za-z0-9_]))
  | (?P<number>\d+(?:\.\d+)?(?![A-Za-z_]))
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|\.\.|[<>()\[\],+\-*/])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    """One token.

    Attributes:
        kind: ``number``, ``duration``, ``string``, ``ident``, ``keyword``, ``op`` or ``eof``.
        text: the token as written (strings unquoted and unescaped).
        pos: 0-based offset in the rule text.
    """

    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Splits a rule into tokens (ending with an ``eof`` token).

    Raises:
        RuleError: at the first character that starts no token.
    """
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = " (use == for equality)" if ch == "=" else ""
            if ch in "\"'":
                raise RuleError("unterminated string", pos)
            raise RuleError(f"unexpected character {ch!r}{hint}", pos)
        kind = m.lastgroup or ""
        value = m.group()
        if kind == "string":
            body = value[1:-1]
            value = re.sub(r"\\(.)", r"\1", body)
        elif kind == "ident" and value in KEYWORDS:
            kind = "keyword"
        if kind != "ws":
            out.append(Token(kind, value, pos))
        pos = m.end()
    out.append(Token("eof", "", len(text)))
    return out
