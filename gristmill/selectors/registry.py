"""Selector registry: the built-ins plus the `gristmill.selectors` entry-point group."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from gristmill.errors import InputError
from gristmill.selectors.base import Selector

ENTRY_POINT_GROUP = "gristmill.selectors"
_BUILTINS = {
    "quality": "gristmill.selectors.quality:QualitySelector",
    "dedup": "gristmill.selectors.dedup:DedupSelector",
    "decontaminate": "gristmill.selectors.decontaminate:DecontaminateSelector",
    "dsir": "gristmill.selectors.dsir:DsirSelector",
    "nudge": "gristmill.selectors.nudge:NudgeSelector",
    "lm_loss": "gristmill.selectors.lm_loss:LMLossSelector",
    "coreset": "gristmill.selectors.coreset:CoresetSelector",
    "perplexity_correlation": (
        "gristmill.selectors.perplexity_correlation:PerplexityCorrelationSelector"
    ),
    "learnability": "gristmill.selectors.learnability:LearnabilitySelector",
    "cartography": "gristmill.selectors.cartography:CartographySelector",
}


def available() -> dict[str, str]:
    """Selector name -> 'module:Class' for every selector that can be used."""
    found = dict(_BUILTINS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def get(name: str) -> type[Selector]:
    """The selector class registered under `name`; InputError listing the known ones."""
    known = available()
    if name not in known:
        raise InputError(f"unknown selector {name!r} (available: {', '.join(sorted(known))})")
    module_name, _, attribute = known[name].partition(":")
    selector = getattr(importlib.import_module(module_name), attribute)
    if not (isinstance(selector, type) and issubclass(selector, Selector)):
        raise InputError(f"selector {name!r} ({known[name]}) is not a gristmill Selector")
    return selector
