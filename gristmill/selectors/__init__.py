"""Selectors: score documents shard by shard, then select under a budget (no orchestration here)."""

from gristmill.selectors.base import (
    PoolFeatures,
    Scorer,
    Selector,
    SelectorConfig,
    SelectorContext,
    SetSelector,
)
from gristmill.selectors.budget import Budget
from gristmill.selectors.registry import available, get
from gristmill.selectors.selection import SelectOptions

__all__ = [
    "Budget",
    "PoolFeatures",
    "Scorer",
    "SelectOptions",
    "Selector",
    "SelectorConfig",
    "SelectorContext",
    "SetSelector",
    "available",
    "get",
]
