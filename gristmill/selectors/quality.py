"""The `quality` selector: Gopher/C4 heuristic rules, each configurable, failures recorded."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import create_model

from gristmill.selectors.base import Selector, SelectorConfig
from gristmill.selectors.quality_rules import RULES, document_stats, failed_rules

# One optional float per rule, named after it; None disables the rule.
QualityConfig = create_model(  # type: ignore[call-overload]
    "QualityConfig",
    __base__=SelectorConfig,
    __doc__="Thresholds of the quality rules (None disables a rule).",
    **{name: (float | None, spec.default) for name, spec in RULES.items()},
)


class QualitySelector(Selector):
    """Scores each document by the fraction of enabled rules it passes; keeps those passing all."""

    name: ClassVar[str] = "quality"
    Config = QualityConfig
    default_mode = "threshold"
    default_threshold = 1.0

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, score, the failed rules as reasons, and every statistic the rules measure."""
        thresholds: dict[str, Any] = self.config.model_dump()
        enabled = sum(1 for value in thresholds.values() if value is not None) or 1
        stats_rows, reasons, scores = [], [], []
        for text in documents["text"].to_pylist():
            stats = document_stats(text)
            failed = failed_rules(stats, thresholds)
            stats_rows.append(stats)
            reasons.append(failed)
            scores.append(1.0 - len(failed) / enabled)
        columns: dict[str, Any] = {
            "doc_id": documents["doc_id"],
            "score": pa.array(scores, pa.float64()),
            "reasons": pa.array(reasons, pa.list_(pa.string())),
        }
        stat_names = sorted({spec.stat for spec in RULES.values()})
        for stat in stat_names:
            values = [float(row.get(stat, 0.0)) for row in stats_rows]
            columns[f"stat_{stat}"] = pa.array(values, pa.float64())
        return pa.table(columns)
