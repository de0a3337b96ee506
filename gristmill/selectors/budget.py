"""Budgets: how much a selection may keep, as a fraction, documents, bytes or tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gristmill.errors import InputError

Unit = Literal["fraction", "docs", "bytes", "tokens"]
_NUMBER = r"(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)"
_PATTERN = re.compile(rf"^{_NUMBER}\s*(?P<unit>[A-Za-z%]*)$")
_COUNT_SCALE = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_BYTE_SCALE = {
    "b": 1,
    "bytes": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


@dataclass(frozen=True)
class Budget:
    """A parsed budget; `value` is a fraction in (0, 1] or a count of its unit."""

    unit: Unit
    value: float
    text: str

    @classmethod
    def parse(cls, text: str | float | int) -> Budget:
        """Parse '0.2', '20%', '10000docs', '10kdocs', '5MB', '2MiB', '2Mtokens'."""
        raw = str(text).strip()
        match = _PATTERN.match(raw.replace("_", ""))
        if not match:
            raise InputError(_usage(raw))
        number, unit = float(match["number"]), match["unit"]
        lowered = unit.lower()
        if unit == "%":
            budget = cls("fraction", number / 100, raw)
        elif unit == "":
            # A bare decimal is a fraction of the pool; a bare integer counts documents.
            is_fraction = not match["number"].isdigit()
            budget = cls("fraction" if is_fraction else "docs", number, raw)
        elif lowered in _BYTE_SCALE:
            budget = cls("bytes", number * _BYTE_SCALE[lowered], raw)
        elif lowered.endswith(("docs", "doc", "documents")):
            scale = lowered.removesuffix("documents").removesuffix("docs").removesuffix("doc")
            budget = cls("docs", number * _scale(scale, raw), raw)
        elif lowered.endswith(("tokens", "token")):
            scale = lowered.removesuffix("tokens").removesuffix("token")
            budget = cls("tokens", number * _scale(scale, raw), raw)
        else:
            raise InputError(_usage(raw))
        if budget.value <= 0 or (budget.unit == "fraction" and budget.value > 1):
            raise InputError(f"budget {raw!r} is out of range: {_usage(raw)}")
        return budget

    def units(self, n_candidates: int) -> float:
        """The budget in its counting unit; a fraction counts documents."""
        return self.value * n_candidates if self.unit == "fraction" else self.value

    @property
    def counts(self) -> str:
        """What the budget counts: docs, bytes or tokens."""
        return "docs" if self.unit == "fraction" else self.unit


def _scale(prefix: str, raw: str) -> float:
    if prefix not in _COUNT_SCALE:
        raise InputError(_usage(raw))
    return _COUNT_SCALE[prefix]


def _usage(raw: str) -> str:
    return (
        f"invalid budget {raw!r}: use a fraction (0.2 or 20%), documents (10000docs, 10kdocs), "
        "bytes (5MB, 2GiB) or tokens (2Mtokens)"
    )
