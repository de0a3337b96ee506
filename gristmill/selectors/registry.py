"""Selector registry: the built-ins plus the `gristmill.selectors` entry-point group."""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.metadata import entry_points
from typing import TypeVar

from gristmill.errors import InputError
from gristmill.selectors.base import Selector

T = TypeVar("T")

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
    "url_filter": "gristmill.selectors.url_filter:UrlFilterSelector",
    "language": "gristmill.selectors.language:LanguageSelector",
    "classifier": "gristmill.selectors.classifier:ClassifierSelector",
}


@functools.lru_cache(maxsize=16)
def _plugins(group: str, search_path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """An entry-point group's (name, value) pairs as installed on `search_path`.

    Reading every distribution's metadata costs about 0.1 CPU-s, and a `select` asks three
    times: cached per search path (a plug-in added to `sys.path` is seen at once).
    """
    return tuple((entry.name, entry.value) for entry in entry_points(group=group))


def registered(builtins: dict[str, str], group: str) -> dict[str, str]:
    """Name -> 'module:Class' of the built-ins plus an entry-point group's plug-ins."""
    found = dict(builtins)
    for name, value in _plugins(group, tuple(sys.path)):
        found.setdefault(name, value)
    return found


def load(kind: str, name: str, known: dict[str, str], base: type[T]) -> type[T]:
    """The class registered under `name` in `known`; InputError listing the known ones."""
    if name not in known:
        raise InputError(f"unknown {kind} {name!r} (available: {', '.join(sorted(known))})")
    module_name, _, attribute = known[name].partition(":")
    found = getattr(importlib.import_module(module_name), attribute)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise InputError(f"{kind} {name!r} ({known[name]}) is not a gristmill {base.__name__}")
    return found


def available() -> dict[str, str]:
    """Selector name -> 'module:Class' for every selector that can be used."""
    return registered(_BUILTINS, ENTRY_POINT_GROUP)


def get(name: str) -> type[Selector]:
    """The selector class registered under `name`; InputError listing the known ones."""
    return load("selector", name, available(), Selector)
