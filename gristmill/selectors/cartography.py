"""The `cartography` selector: a data map from a reference classifier's training dynamics.

Swayamdipta et al. 2020: fine-tune a reference classifier on the candidate set for `epochs`
epochs and, after each epoch, record each example's probability of its gold label p_e.
Confidence = mean_e p_e, variability = std_e p_e, correctness = fraction of epochs it was
predicted right. `region` picks what to keep under the budget (a fraction, e.g. 33%):
`ambiguous` (highest variability, FTFT's choice), `hard` (lowest confidence: this is where
mislabelled examples land) or `easy` (highest confidence).

FTFT (Du et al. 2023): the reference model (`model`, or a `preset` pretrained on the pool) is a
parameter of the selector only. It can be much smaller than whatever model is later trained on
the selection, and the data map transfers; too weak a reference cannot fit hard examples and
calls them ambiguous.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from gristmill.errors import InputError
from gristmill.selectors.base import PoolFeatures, Section, SelectorContext
from gristmill.selectors.explain import ranked_regions
from gristmill.selectors.reference import ReferenceConfig, ReferenceSetSelector
from gristmill.selectors.selection import Ranking, SelectOptions

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView

Region = Literal["ambiguous", "hard", "easy"]
# A region's ranking score, as SQL over the stored statistics (keyed by the validated region).
REGION_SCORES: dict[str, str] = {
    "ambiguous": "variability",
    "hard": "-confidence",
    "easy": "confidence",
}


class CartographyConfig(ReferenceConfig):
    """The label field, the reference classifier's training, and the region to keep."""

    unkeyed_fields = frozenset({"device", "region"})  # region only ranks the stored statistics

    label_field: str = Field("label", description="meta field holding each document's label")
    epochs: int = Field(4, ge=2, description="epochs of the reference classifier (>= 2)")
    lr: float = Field(3e-4, gt=0, description="fine-tuning learning rate")
    region: Region = Field(
        "ambiguous", description="ambiguous (most variable), hard (least confident) or easy"
    )


class CartographySelector(ReferenceSetSelector):
    """Data-map regions from per-epoch gold-label probabilities of a reference classifier."""

    name: ClassVar[str] = "cartography"
    version: ClassVar[str] = "1"
    Config = CartographyConfig
    default_mode = "topk"
    candidate_columns: ClassVar[tuple[str, ...]] = ("confidence", "variability")

    config: CartographyConfig

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, text and label (null when the meta has no `label_field`)."""
        field = self.config.label_field
        labels = []
        for meta in documents["meta"].to_pylist():
            value = (json.loads(meta) if meta else {}).get(field)
            labels.append(None if value is None else str(value))
        return pa.table(
            {
                "doc_id": documents["doc_id"],
                "text": documents["text"],
                "label": pa.array(labels, pa.string()),
            }
        )

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        """Per-epoch gold probabilities, confidence, variability, correctness; score: confidence."""
        from gristmill.training.finetune import ClassificationData, classification_dynamics

        table = pool.read(["text", "label"])
        missing = table.filter(table["label"].is_null())
        if missing.num_rows:
            raise InputError(
                f"selector cartography: label_field: {missing.num_rows} documents of corpus "
                f"{context.corpus!r} have no meta field {self.config.label_field!r} "
                f"(first: doc_id {missing['doc_id'][0]})"
            )
        labels = table["label"].to_pylist()
        names = sorted(set(labels))
        if len(names) < 2:
            raise InputError(
                f"selector cartography: label_field: corpus {context.corpus!r} has "
                f"{len(names)} distinct labels in {self.config.label_field!r}; a classifier "
                "needs at least 2"
            )
        ids = {name: i for i, name in enumerate(names)}
        gold = np.array([ids[label] for label in labels], dtype=np.int64)
        data = ClassificationData(table["text"].to_pylist(), gold.tolist(), names)
        base = self.base_model(context, data.texts, pool.scratch)
        tokenizer = self.load_tokenizer(base, "model")
        probabilities = classification_dynamics(
            base, tokenizer, data, self.train_config(), pool.scratch / "reference",
            self.config.epochs, self.config.max_length,
            f"cartography: reference classifier ({len(gold)} examples)",
            trust_remote_code=self.config.trust_remote_code,
        )  # fmt: skip
        rows = np.arange(len(gold))
        p_gold = probabilities[:, rows, gold].T  # (examples, epochs)
        correct = gold[:, None] == probabilities.argmax(-1).T
        confidence = p_gold.mean(1)
        report = {
            "reference": self.config.model
            or f"preset {self.config.preset} ({self.config.base_steps} steps on the pool)",
            "epochs": self.config.epochs,
            "examples": len(gold),
            "labels": names,
            "train_accuracy_per_epoch": [round(float(a), 4) for a in correct.mean(0)],
        }
        return pa.table(
            {
                "doc_id": table["doc_id"],
                "score": pa.array(confidence, pa.float64()),
                "label": table["label"],
                "confidence": pa.array(confidence, pa.float64()),
                "variability": pa.array(p_gold.std(1), pa.float64()),
                "correctness": pa.array(correct.mean(1), pa.float64()),
                "p_gold": pa.array(list(p_gold.astype(np.float64)), pa.list_(pa.float64())),
            }
        ).replace_schema_metadata({"gristmill": json.dumps(report)})

    def ranking(self, units: float | None, options: SelectOptions) -> Ranking:
        """Keep the region under the budget: most variable, least or most confident first."""
        if units is None:
            raise ValueError(
                "cartography keeps a region under a budget; give one (--budget 33%, FTFT's share)"
            )
        return Ranking(score=REGION_SCORES[self.config.region])

    def explain(self, view: SelectionView) -> list[Section]:
        """Examples from each data-map region, with their statistics."""
        return ranked_regions(
            view,
            ("confidence", "variability", "correctness", "label"),
            {"ambiguous": "s.variability desc", "hard": "s.confidence asc",
             "easy": "s.confidence desc"},
        )  # fmt: skip
