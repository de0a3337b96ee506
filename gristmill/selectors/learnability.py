"""The `learnability` selector: how much fine-tuning on the candidate set lowers an example's loss.

LoBaSS (Zhou et al. 2023): L_base and L_ref are mean losses on the response tokens only, under
the base model and under the base fine-tuned on the candidate set (or a given `reference`);
learnability = (L_base - L_ref) / L_base. Examples low under both models are already known,
high under both too hard or noise; the top k are the learnable ones. `method=rho` is RHO-LOSS's
held-out variant (Mindermann et al. 2022): the pool is split in two halves by doc_id, a reference
is fine-tuned on each, and each half is scored by the model that did not see it, so the
reference loss is not merely memorised. Each document's text is the response; the prompt is
`prompt_template` formatted with its meta fields (as in the experiment's SFT task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from gristmill.errors import InputError
from gristmill.selectors.base import PoolFeatures, Section, SelectorContext
from gristmill.selectors.explain import ranked_regions
from gristmill.selectors.reference import ReferenceConfig, ReferenceSetSelector
from gristmill.selectors.requirements import ModelFiles, Requirement
from gristmill.selectors.selection import Ranking, SelectOptions

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView


class LearnabilityConfig(ReferenceConfig):
    """Which losses, from which models, and how they are ranked."""

    unkeyed_fields = frozenset({"device", "normalize"})  # normalize only ranks the stored losses

    method: Literal["lobass", "rho"] = Field(
        "lobass", description="lobass: reference fine-tuned on the whole set; rho: two halves"
    )
    reference: str | None = Field(
        None, description="lobass: an already fine-tuned reference model (skips fine-tuning)"
    )
    prompt_template: str = Field(
        "{instruction}\n{input}\n", description="the prompt, from the document's meta fields"
    )
    epochs: int = Field(3, ge=1, description="reference fine-tuning epochs")
    max_length: int = Field(256, ge=8, description="prompt + response tokens (longer are cut)")
    normalize: bool = Field(
        True, description="rank by (L_base - L_ref) / L_base (LoBaSS) or by L_base - L_ref"
    )

    @model_validator(mode="after")
    def _reference_is_lobass(self) -> LearnabilityConfig:
        if self.reference is not None and self.method == "rho":
            raise ValueError("reference: method rho trains its own two references; omit it")
        return self


class LearnabilitySelector(ReferenceSetSelector):
    """Learnability of each prompt/response pair: (L_base - L_ref) / L_base, response tokens."""

    name: ClassVar[str] = "learnability"
    version: ClassVar[str] = "1"
    Config = LearnabilityConfig
    default_mode = "topk"
    candidate_columns: ClassVar[tuple[str, ...]] = ("loss_base", "loss_ref")

    config: LearnabilityConfig

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """Also the given reference model's files."""
        needs = super().requirements(context)
        if self.config.reference is not None:
            needs.append(ModelFiles("reference", self.config.reference, stage="set"))
        return needs

    def prepare(self, context: SelectorContext) -> None:
        """Fail early on a base or reference model that cannot be found."""
        super().prepare(context)
        if self.config.reference is not None:
            self.load_tokenizer(self.model_path(context, self.config.reference), "reference")

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, prompt (null when the template does not fit the meta), response, and why."""
        prompts: list[str | None] = []
        problems: list[str | None] = []
        for meta in documents["meta"].to_pylist():
            fields = json.loads(meta) if meta else {}
            try:
                prompts.append(self.config.prompt_template.format_map(fields))
                problems.append(None)
            except (KeyError, IndexError, ValueError) as error:
                prompts.append(None)
                problems.append(f"{error!r} (meta fields: {', '.join(fields) or 'none'})")
        return pa.table(
            {
                "doc_id": documents["doc_id"],
                "prompt": pa.array(prompts, pa.string()),
                "response": documents["text"],
                "prompt_problem": pa.array(problems, pa.string()),
            }
        )

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        """Base and reference losses per example; score = learnability."""
        from gristmill.training.data import heldout_mask
        from gristmill.training.finetune import SFTData

        table = pool.read(["prompt", "response", "prompt_problem"])
        bad = table.filter(table["prompt"].is_null())
        if bad.num_rows:
            raise InputError(
                f"selector learnability: prompt_template: {bad.num_rows} documents of corpus "
                f"{context.corpus!r} do not fit it; doc_id {bad['doc_id'][0]}: "
                f"{bad['prompt_problem'][0]}"
            )
        if table.num_rows == 0:
            raise InputError(f"selector learnability: corpus {context.corpus!r} has no documents")
        doc_ids = table["doc_id"].to_numpy()
        data = SFTData(table["prompt"].to_pylist(), table["response"].to_pylist())
        base = self.base_model(context, data.responses, pool.scratch)
        tokenizer = self.load_tokenizer(base, "model")
        nll_base, counts = self._losses(base, tokenizer, data)
        nll_ref = np.full(len(doc_ids), np.nan)
        if self.config.method == "lobass":
            given = self.config.reference
            reference = (
                context.inputs.model("reference").path if given is not None
                else self._finetune(base, tokenizer, data, pool.scratch / "reference")
            )  # fmt: skip
            nll_ref = self._losses(reference, tokenizer, data)[0]
        else:
            first_half = heldout_mask(doc_ids, 0.5)
            for side, trained_on in (("a", first_half), ("b", ~first_half)):
                if not trained_on.any() or trained_on.all():
                    raise InputError(
                        "selector learnability: method rho needs documents in both halves "
                        f"(the pool has {len(doc_ids)})"
                    )
                half = _subset(data, trained_on)
                reference = self._finetune(base, tokenizer, half, pool.scratch / f"ref-{side}")
                unseen = _subset(data, ~trained_on)
                nll_ref[~trained_on] = self._losses(reference, tokenizer, unseen)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            loss_base = nll_base / counts
            loss_ref = nll_ref / counts
        report = {
            "method": self.config.method,
            "base": self.config.model
            or f"preset {self.config.preset} ({self.config.base_steps} steps on the pool)",
            "reference": self.config.reference or f"fine-tuned {self.config.epochs} epochs",
            "examples": len(doc_ids),
            "mean_loss_base": float(np.nanmean(loss_base)),
            "mean_loss_ref": float(np.nanmean(loss_ref)),
        }
        return pa.table(
            {
                "doc_id": table["doc_id"],
                "score": pa.array(learnability(loss_base, loss_ref, True), pa.float64()),
                "loss_base": pa.array(loss_base, pa.float64()),
                "loss_ref": pa.array(loss_ref, pa.float64()),
                "response_tokens": pa.array(counts, pa.int64()),
            }
        ).replace_schema_metadata({"gristmill": json.dumps(report)})

    def _losses(self, model_path: str, tokenizer: Any, data: Any) -> tuple[np.ndarray, np.ndarray]:
        from gristmill.training.finetune import response_losses
        from gristmill.training.models import load_causal_lm

        model = load_causal_lm(model_path, trust_remote_code=self.config.trust_remote_code)
        return response_losses(
            model, tokenizer, data, self.config.max_length, device=self.config.device,
            precision=self.config.precision,
        )  # fmt: skip

    def _finetune(self, base: str, tokenizer: Any, data: Any, out_dir: Path) -> str:
        """`base` fine-tuned on `data` for `epochs` epochs (resumed if interrupted)."""
        from gristmill.training.finetune import finetune_sft

        steps = self.config.epochs * -(-len(data.prompts) // self.config.micro_batch_size)
        finetune_sft(
            base, tokenizer, data, self.train_config(steps), out_dir, self.config.max_length,
            f"learnability: fine-tune reference ({len(data.prompts)} examples)",
            trust_remote_code=self.config.trust_remote_code,
        )  # fmt: skip
        return str(out_dir)

    def ranking(self, units: float | None, options: SelectOptions) -> Ranking:
        """Rank by learnability (normalised or not) from the stored losses."""
        # `learnability` in SQL: IEEE doubles, so a missing loss (NaN, NULL) is never selected
        # and L_base = 0 gives -inf (kept, last) or NaN, as numpy does.
        reducible = "(loss_base::double - loss_ref::double)"
        if self.config.normalize:
            return Ranking(score=f"{reducible} / loss_base::double")
        return Ranking(score=reducible)

    def explain(self, view: SelectionView) -> list[Section]:
        """The most and least learnable examples, with both losses."""
        return ranked_regions(
            view,
            ("loss_base", "loss_ref"),
            {"high learnability": "s.score desc", "low learnability": "s.score asc"},
        )


def learnability(loss_base: np.ndarray, loss_ref: np.ndarray, normalize: bool) -> np.ndarray:
    """(L_base - L_ref) / L_base, or L_base - L_ref; NaN where an example has no response."""
    with np.errstate(invalid="ignore", divide="ignore"):
        reducible = loss_base - loss_ref
        return reducible / loss_base if normalize else reducible


def _subset(data: Any, mask: np.ndarray) -> Any:
    from gristmill.training.finetune import SFTData

    rows = np.flatnonzero(mask)
    return SFTData([data.prompts[i] for i in rows], [data.responses[i] for i in rows])
