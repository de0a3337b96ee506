"""`inspect` as a library step: storage samples the selection, its selector explains it."""

from __future__ import annotations

from typing import Any

from gristmill.errors import InputError
from gristmill.selectors import registry
from gristmill.selectors.base import Section, Selector
from gristmill.storage import queries
from gristmill.storage.queries import SelectionView
from gristmill.storage.workspace import Workspace


def inspect_selection(
    workspace: Workspace,
    name: str,
    sample: int = 5,
    seed: int = 0,
    max_chars: int = 300,
    ranked: int = 0,
) -> dict[str, Any]:
    """The selection's record, random kept and dropped documents, the `ranked` highest and
    lowest scored candidates with scores and reasons, and what its selector explains: each
    section's data under its key, and every section's tables under `sections`."""
    with queries.selection_view(workspace, name, sample, seed, max_chars) as view:
        result = queries.sample_selection(view, ranked)
        result["sections"] = []
        for section in selector_sections(view):
            if section.key in result:
                raise RuntimeError(
                    f"selector {view.record['selector']}: explain section {section.key!r} "
                    f"clashes with another key of the inspection"
                )
            result[section.key] = section.data
            result["sections"].append(section.as_dict())
    return result


def selector_sections(view: SelectionView) -> list[Section]:
    """The selection's selector's sections; none when the selector is no longer installed, or
    the record's config no longer builds it (an older record)."""
    try:
        chosen = registry.get(view.record["selector"])
    except InputError:
        return []
    if chosen.explain is Selector.explain:
        return []
    try:
        selector = chosen.from_params(view.record["config"])
    except InputError:
        return []
    return selector.explain(view)


def corpus_report(workspace: Workspace, corpus: str) -> dict[str, Any]:
    """A corpus's statistics (storage's counts, domains and rejects), with its documents per
    language when a language identification of it is stored."""
    from gristmill.selectors.language import corpus_languages

    return {
        **queries.corpus_stats(workspace, corpus),
        "languages": corpus_languages(workspace, corpus),
    }
