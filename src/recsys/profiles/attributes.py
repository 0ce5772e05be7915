"""Static profile attributes: demographics, declared interests, enrichment.

Only attributes declared in an :class:`AttributeSchema` are stored; anything
else is refused with :class:`AttributeValidationError`. Each stored value
keeps its ``source`` and ``confidence``: values the user declared
(``source="declared"``, confidence 1.0) always win; third-party values merge
by higher confidence, then newer. Attributes marked ``pii`` (zip, email ...)
are encrypted at rest with :class:`~recsys.privacy.crypto.PiiCipher`; without
``RECSYS_PII_KEY`` writing one is an error.

Example:
    >>> schema = AttributeSchema.default()
    >>> schema.check("age", 29)
    29
    >>> try:
    ...     schema.check("shoe_size", 42)
    ... except AttributeValidationError as e:
    ...     print(e)
    shoe_size: attribute is not in the profile schema
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from recsys.events.pii import PiiCipher, is_token

DECLARED = "declared"


class AttributeValidationError(ValueError):
    """An attribute is outside the schema or has a wrong value."""


@dataclass(frozen=True)
class AttributeSpec:
    """One static attribute.

    Attributes:
        name: attribute name; rules refer to it by this name.
        kind: ``int``, ``float``, ``str``, ``bool`` or ``str_list``.
        pii: encrypted at rest; never loaded into the stream consumer, so
            segment rules cannot use it.
        min: smallest number allowed.
        max: largest number allowed.
        choices: allowed strings, if restricted.
        max_len: longest string, or most list entries.
    """

    name: str
    kind: str
    pii: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    max_len: int = 128


@dataclass(frozen=True)
class AttributeValue:
    """A stored attribute value with its provenance.

    Attributes:
        value: the value.
        source: ``"declared"`` (from the user) or the enrichment provider's name.
        confidence: in [0, 1]; declared values are 1.0.
        updated_us: when it was written.
    """

    value: Any
    source: str
    confidence: float
    updated_us: int

    def to_json(self) -> str:
        return json.dumps(
            {"v": self.value, "s": self.source, "c": self.confidence, "t": self.updated_us},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> AttributeValue:
        d = json.loads(text)
        return cls(d["v"], d["s"], float(d["c"]), int(d["t"]))

    def wins_over(self, other: AttributeValue | None) -> bool:
        """Merge rule: declared beats third-party; then confidence, then recency."""
        if other is None:
            return True
        if (self.source == DECLARED) != (other.source == DECLARED):
            return self.source == DECLARED
        if self.source == DECLARED:
            return True
        return (self.confidence, self.updated_us) >= (other.confidence, other.updated_us)


_KINDS = ("int", "float", "str", "bool", "str_list")


class AttributeSchema:
    """The attributes a profile may hold.

    Args:
        specs: the declared attributes.
    """

    def __init__(self, specs: Iterable[AttributeSpec]) -> None:
        self.specs: dict[str, AttributeSpec] = {}
        for s in specs:
            if s.kind not in _KINDS:
                raise ValueError(f"attribute {s.name!r}: kind must be one of {_KINDS}")
            if s.name in self.specs:
                raise ValueError(f"attribute {s.name!r} declared twice")
            self.specs[s.name] = s

    @classmethod
    def default(cls) -> AttributeSchema:
        """Demographics, declared interests, location and contact fields (PII)."""
        return cls(
            [
                AttributeSpec("age", "int", min=0, max=130),
                AttributeSpec(
                    "gender", "str", choices=("female", "male", "nonbinary", "other", "undisclosed")
                ),
                AttributeSpec("occupation", "str", max_len=64),
                AttributeSpec("home_country", "str", max_len=2),
                AttributeSpec("home_region", "str", max_len=64),
                AttributeSpec("language", "str", max_len=16),
                AttributeSpec("interests", "str_list", max_len=50),
                AttributeSpec("income_band", "str", max_len=32),
                AttributeSpec("household_size", "int", min=1, max=50),
                AttributeSpec("zip", "str", pii=True, max_len=16),
                AttributeSpec("email", "str", pii=True, max_len=254),
                AttributeSpec("phone", "str", pii=True, max_len=32),
                AttributeSpec("full_name", "str", pii=True, max_len=128),
                AttributeSpec("birth_date", "str", pii=True, max_len=10),
            ]
        )

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __getitem__(self, name: str) -> AttributeSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise AttributeValidationError(
                f"{name}: attribute is not in the profile schema"
            ) from None

    def check(self, name: str, value: Any) -> Any:
        """Validates and normalizes one value.

        Raises:
            AttributeValidationError: unknown attribute or bad value.
        """
        spec = self[name]
        kind = spec.kind
        if kind in ("int", "float"):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and kind == "int" and not isinstance(value, int):
                ok = float(value).is_integer()
                value = int(value) if ok else value
            if not ok or not math.isfinite(value):
                raise AttributeValidationError(f"{name}: expected {kind}, got {value!r}")
            if (spec.min is not None and value < spec.min) or (
                spec.max is not None and value > spec.max
            ):
                raise AttributeValidationError(
                    f"{name}: {value!r} is outside [{spec.min}, {spec.max}]"
                )
            return float(value) if kind == "float" else value
        if kind == "bool":
            if not isinstance(value, bool):
                raise AttributeValidationError(f"{name}: expected a boolean, got {value!r}")
            return value
        if kind == "str":
            if not isinstance(value, str) or not value or len(value) > spec.max_len:
                raise AttributeValidationError(
                    f"{name}: expected a non-empty string of at most {spec.max_len} characters"
                )
            if spec.choices is not None and value not in spec.choices:
                raise AttributeValidationError(
                    f"{name}: {value!r} is not one of {list(spec.choices)}"
                )
            return value
        if (
            not isinstance(value, list | tuple)
            or len(value) > spec.max_len
            or not all(isinstance(v, str) and 0 < len(v) <= 128 for v in value)
        ):
            raise AttributeValidationError(
                f"{name}: expected a list of at most {spec.max_len} short strings"
            )
        return sorted(set(value))

    def encode(self, name: str, value: AttributeValue, cipher: PiiCipher) -> str:
        """Stored text of a value: JSON, encrypted when the attribute is PII."""
        text = value.to_json()
        return cipher.encrypt(text, field=name) if self[name].pii else text

    def decode(self, name: str, stored: str, cipher: PiiCipher) -> AttributeValue:
        """Reads back :meth:`encode` output (decrypting PII)."""
        if is_token(stored):
            stored = cipher.decrypt(stored, field=name)
        return AttributeValue.from_json(stored)

    def plain_values(self, stored: Mapping[str, str]) -> dict[str, Any]:
        """Values of the non-PII attributes (what segment rules see); PII and
        attributes no longer in the schema are left out."""
        out: dict[str, Any] = {}
        for name, text in stored.items():
            spec = self.specs.get(name)
            if spec is None or spec.pii or is_token(text):
                continue
            out[name] = AttributeValue.from_json(text).value
        return out


def age_bucket(age: int | None) -> str | None:
    """The age bucket of the feature schema's ``user_age`` (MovieLens style)."""
    if age is None:
        return None
    for upper, label in (
        (18, "<18"),
        (25, "18-24"),
        (35, "25-34"),
        (45, "35-44"),
        (50, "45-49"),
        (56, "50-55"),
    ):
        if age < upper:
            return label
    return "56+"
