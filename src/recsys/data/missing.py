"""What counts as a missing value in text data, in one place.

Exported tables write a missing value in many ways: an empty field, whitespace,
``NA``, ``N/A``, ``null``, ``None``, ``nan`` or pandas' ``<NA>``. None of these may
ever become a user or item id (``"NA"`` would otherwise be one very active user),
so every loader checks ids (and timestamps) with :func:`missing_mask` and rejects
such rows with a count in its :class:`~recsys.data.frame.LoadReport`. The tokens
are compared case-insensitively after stripping whitespace, and a dataset config
can replace them (``read.missing_values``).

Example:
    >>> missing_mask(pd.Series(["u1", "NA", " ", None, "null", "nan", "Nancy"])).tolist()
    [False, True, True, True, True, True, False]
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Spellings of "no value" (lower case; compared after strip + lower-casing).
MISSING_TOKENS: tuple[str, ...] = ("", "na", "n/a", "nan", "null", "none", "<na>")


def _tokens(tokens: Iterable[str]) -> list[str]:
    out = {str(t).strip().lower() for t in tokens}
    out.add("")  # an empty or blank field is always missing
    return sorted(out)


def missing_mask(values: pd.Series, tokens: Iterable[str] = MISSING_TOKENS) -> np.ndarray:
    """Boolean mask of missing values: nulls, and strings that are missing tokens.

    Args:
        values: any column (numbers, strings, objects).
        tokens: spellings of a missing value (case-insensitive, stripped).

    Returns:
        ``bool`` array aligned with ``values``; numbers are missing only when
        null/NaN.

    Example:
        >>> missing_mask(pd.Series([1.0, float("nan")])).tolist()
        [False, True]
    """
    missing = values.isna().to_numpy(dtype=bool)
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("str").str.strip().str.lower()
        missing = missing | text.isin(_tokens(tokens)).to_numpy(dtype=bool)
    return missing


def missing_text(column: pa.Array, tokens: Iterable[str] = MISSING_TOKENS) -> np.ndarray:
    """:func:`missing_mask` for a pyarrow string column (the delimited-file readers).

    Args:
        column: ``string`` or ``large_string`` array.
        tokens: spellings of a missing value.

    Returns:
        ``bool`` array, True where the field is null, blank or a missing token.

    Example:
        >>> missing_text(pa.array(["7", "NULL", ""])).tolist()
        [False, True, True]
    """
    text = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    found = pc.is_in(text, value_set=pa.array(_tokens(tokens), type=column.type))
    return np.asarray(pc.fill_null(found, True), dtype=bool)


__all__ = ["MISSING_TOKENS", "missing_mask", "missing_text"]
