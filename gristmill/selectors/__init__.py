"""Selectors: score documents shard by shard, then select under a budget (no orchestration here)."""

from gristmill.selectors.base import (
    PoolFeatures,
    Scorer,
    Section,
    Selector,
    SelectorConfig,
    SelectorContext,
    SetSelector,
    Table,
)
from gristmill.selectors.budget import Budget
from gristmill.selectors.registry import available, get
from gristmill.selectors.selection import SelectOptions

__all__ = [
    "Budget",
    "PoolFeatures",
    "Scorer",
    "Section",
    "SelectOptions",
    "Selector",
    "SelectorConfig",
    "SelectorContext",
    "SetSelector",
    "Table",
    "available",
    "get",
]
