"""The `perplexity_correlation` selector (Thrush, Potts, Hashimoto 2024).

Across a set of models (a "zoo": HF checkpoints with each one's benchmark error), the domains
whose bits per byte rise and fall with the error are the ones worth training on. The selector:

1. scores the pool once per zoo model with the `lm_loss` selector (stored and reused like any
   signal, keyed by the model's file hashes);
2. aggregates bits per byte per domain (token-weighted over documents) into X (models x domains);
3. estimates the correlation of each domain with the error (`pc_math.ESTIMATORS`) and projects
   it onto the capped simplex (`pc_math.PROJECTIONS`), each domain capped at what it holds
   relative to the budget;
4. labels each document include/exclude by its domain's weight and trains a fastText bigram
   classifier, whose P(include) is the document's score, so the top-k under the budget keeps
   the documents most like the chosen domains.

With fewer than two domains it works per document: X has a column per document and the
score is the document's own estimate (the linear projection under the budget is then the
top-k by estimate).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field

from gristmill.devices import Device
from gristmill.errors import InputError
from gristmill.selectors import fasttext_model, pc_math
from gristmill.selectors.base import (
    PoolFeatures,
    Section,
    SelectorConfig,
    SelectorContext,
    SetSelector,
    Table,
)
from gristmill.selectors.fasttext_model import FastTextSettings
from gristmill.selectors.lm_loss import LMLossConfig, LMLossSelector
from gristmill.selectors.requirements import CorpusRead, Requirement, ScoredCorpus, Setting
from gristmill.selectors.tokens import budget_requirements
from gristmill.storage.files import sql_files
from gristmill.storage.workspace import Workspace
from gristmill.training.zoo import ZOO_FILE, ZOO_METADATA, ZOOS_DIR

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView

MIN_MODELS = 3


@dataclass(frozen=True)
class ZooModel:
    """One model of a zoo: where it is, its benchmark error, and its CSV line (for errors)."""

    model: str
    error: float
    line: int


@dataclass(frozen=True)
class Zoo:
    """The models and errors of a zoo CSV, plus what its builder recorded (if it built it)."""

    csv_path: Path
    models: list[ZooModel]
    metadata: dict[str, Any]


def find_zoo_csv(workspace: Workspace, spec: str) -> Path:
    """The CSV a `zoo=` parameter means: a workspace zoo name, a directory or a CSV file."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec) and (
        (workspace.root / ZOOS_DIR / spec / ZOO_FILE).exists()
    ):
        return workspace.root / ZOOS_DIR / spec / ZOO_FILE
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / ZOO_FILE
    if not path.is_file():
        raise InputError(
            f"zoo {spec!r}: no such zoo (looked for {workspace.root / ZOOS_DIR / spec} and "
            f"for a CSV file or a directory with {ZOO_FILE}); build one with `gristmill zoo "
            "build` or write a CSV with columns model,error"
        )
    return path.resolve()


def load_zoo(csv_path: Path) -> Zoo:
    """Read a zoo CSV (columns model,error; more columns are kept for reference only).

    InputError naming the file, line and key for a missing column, a bad or out-of-range
    error, a repeated model or fewer than three models.
    """
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = header  # " error" and "error" are the same column
            missing = [c for c in ("model", "error") if c not in header]
            if missing:
                raise InputError(
                    f"{csv_path}: header: missing column(s) {', '.join(missing)} "
                    f"(a zoo CSV has columns model,error; found {', '.join(header) or 'none'})"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{csv_path}: cannot read the zoo CSV: {error}") from None
    models: list[ZooModel] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        name = (row.get("model") or "").strip()
        if not name:
            raise InputError(f"{csv_path}: line {line}: model: empty")
        if name in seen:
            raise InputError(f"{csv_path}: line {line}: model: {name!r} is listed twice")
        seen.add(name)
        try:
            error = float((row.get("error") or "").strip())
        except ValueError:
            raise InputError(
                f"{csv_path}: line {line}: error: {row.get('error')!r} is not a number"
            ) from None
        if not (np.isfinite(error) and 0.0 <= error <= 1.0):
            raise InputError(
                f"{csv_path}: line {line}: error: {error} is outside [0, 1]; give each model's "
                "benchmark error (1 - accuracy, lower is better), not accuracy or a loss"
            )
        models.append(ZooModel(name, error, line))
    if len(models) < MIN_MODELS:
        raise InputError(
            f"{csv_path}: a zoo needs at least {MIN_MODELS} models to correlate losses with "
            f"errors; it has {len(models)}"
        )
    metadata_path = csv_path.parent / ZOO_METADATA
    metadata = {}
    if metadata_path.exists():
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise InputError(f"{metadata_path}: not valid JSON: {error}") from None
    return Zoo(csv_path, models, metadata)


def resolve_zoo_model(zoo: Zoo, entry: ZooModel, models_root: Path) -> str:
    """A zoo model's directory (relative to the CSV, a workspace model or a path) or hub name."""
    from gristmill.storage.files import resolve_model_path

    beside = zoo.csv_path.parent / entry.model
    if (beside / "config.json").exists():
        return str(beside.resolve())
    resolved = resolve_model_path(entry.model, models_root)
    looks_local = entry.model.startswith((".", "/", "~")) or (beside.exists())
    if looks_local and not (Path(resolved) / "config.json").exists():
        raise InputError(
            f"{zoo.csv_path}: line {entry.line}: model: {entry.model!r} not found (no HF "
            f"checkpoint at {beside} or {resolved})"
        )
    return resolved


class PerplexityCorrelationConfig(SelectorConfig):
    """The zoo, the estimator and projection, and the document classifier."""

    # The per-shard pass stores doc_id and domain only: every setting keys the set signal alone.
    set_fields = frozenset(
        {"zoo", "estimator", "projection", "unit", "keep_fraction", "heldout_fraction",
         "classifier_epochs", "classifier_dim", "classifier_max_docs", "max_length", "precision"}
    )  # fmt: skip
    unkeyed_fields = frozenset({"device", "batch_tokens"})

    zoo: str = Field(description="workspace zoo name, a directory with zoo.csv, or a CSV file")
    estimator: Literal["spearmanr", "sign_cdf", "sign", "sign_sign", "product"] = "sign_cdf"
    projection: Literal["linear", "l2"] = "linear"
    unit: Literal["auto", "domain", "document"] = Field(
        "auto", description="estimate per domain or per document (auto: domains when >= 2)"
    )
    keep_fraction: float | None = Field(
        None, gt=0, le=1, description="share of the pool to keep for the caps (default: budget)"
    )
    heldout_fraction: float | None = Field(
        None, ge=0, lt=1,
        description="measure bits per byte only on the held-out split of this fraction "
        "(default: the split the zoo was built with, so no model has trained on that text)",
    )  # fmt: skip
    classifier_epochs: int = Field(
        25, ge=1, description="fastText epochs (5, its default, underfits pools of thousands)"
    )
    classifier_dim: int = Field(64, ge=4, description="fastText vector size")
    classifier_max_docs: int = Field(200_000, ge=10, description="fastText training sample")
    batch_tokens: int = Field(16384, ge=64, description="LM scoring: padded tokens per batch")
    max_length: int | None = Field(None, ge=8, description="LM scoring: window length")
    device: Device = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class PerplexityCorrelationSelector(SetSelector):
    """Domains whose losses track benchmark error across a model zoo; fastText ranks documents."""

    name: ClassVar[str] = "perplexity_correlation"
    version: ClassVar[str] = "1"
    Config = PerplexityCorrelationConfig
    default_mode = "topk"

    config: PerplexityCorrelationConfig

    def __init__(self, config: PerplexityCorrelationConfig) -> None:
        super().__init__(config)
        self.zoo: Zoo | None = None

    def _load_zoo(self, context: SelectorContext) -> Zoo:
        """The zoo, checked, after checking there is a budget to cap by."""
        if context.budget is None and self.config.keep_fraction is None:
            raise InputError(
                "selector 'perplexity_correlation' needs a budget (--budget) or "
                "--param keep_fraction=... to cap each domain"
            )
        return load_zoo(find_zoo_csv(context.workspace, self.config.zoo))

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """Each zoo model's losses on the pool, its error, the split, seed, budget and sizes."""
        self.zoo = zoo = self._load_zoo(context)
        models_root = context.workspace.root / "models"
        needs: list[Requirement] = []
        for index, entry in enumerate(zoo.models):
            scorer = LMLossSelector(
                LMLossConfig(
                    model=resolve_zoo_model(zoo, entry, models_root),
                    batch_tokens=self.config.batch_tokens,
                    max_length=self.config.max_length,
                    device=self.config.device,
                    precision=self.config.precision,
                )
            )
            prefix = f"{zoo.csv_path}: line {entry.line}: model: "
            needs.append(ScoredCorpus(f"loss:{index}", context.corpus, scorer, error_prefix=prefix))
        needs += [
            CorpusRead("pool_documents", context.corpus, stage="set"),  # trains the classifier
            Setting("errors", [m.error for m in zoo.models]),
            Setting("heldout_fraction", self._heldout_fraction()),
        ]
        return needs + budget_requirements(context)

    def prepare(self, context: SelectorContext) -> None:
        """Read and check the zoo and its models, unless `requirements` (which the pipeline
        calls first) already did: a model that cannot be found fails before any scoring."""
        if self.zoo is None:
            self.requirements(context)

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id and domain of each document of a shard (the losses are lm_loss signals)."""
        return pa.table({"doc_id": documents["doc_id"], "domain": documents["domain"]})

    def explain(self, view: SelectionView) -> list[Section]:
        """The domains ranked by their estimate: the top and bottom five when there are more."""
        report = view.report
        ranked = report.get("domains") if isinstance(report, dict) else None
        if not ranked:
            return []
        shown = ranked if len(ranked) <= 10 else ranked[:5] + ranked[-5:]
        table = Table("domains by estimate (top and bottom)", shown)
        return [Section("domains_by_estimate", shown, [table], shows=("domains",))]

    def _heldout_fraction(self) -> float | None:
        if self.config.heldout_fraction is not None:
            return self.config.heldout_fraction or None
        assert self.zoo is not None
        return self.zoo.metadata.get("heldout_fraction")

    def _losses(self, context: SelectorContext, doc_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Bits per byte (models x documents) and token counts (models x documents) of the pool."""
        assert self.zoo is not None
        bpb = np.empty((len(self.zoo.models), len(doc_ids)))
        tokens = np.empty((len(self.zoo.models), len(doc_ids)))
        for row in range(len(self.zoo.models)):
            files = context.inputs.signal(f"loss:{row}").files
            with duckdb.connect() as con:
                con.register("pool_ids", pa.table({"doc_id": doc_ids}))
                table = con.sql(
                    "select s.bits_per_byte, s.n_tokens from pool_ids p left join "
                    f"read_parquet({sql_files(files)}) s using (doc_id) order by p.doc_id"
                ).to_arrow_table()
            bpb[row] = table["bits_per_byte"].to_numpy(zero_copy_only=False).astype(np.float64)
            tokens[row] = table["n_tokens"].to_numpy(zero_copy_only=False).astype(np.float64)
        return bpb, np.nan_to_num(tokens)

    def _sizes(self, context: SelectorContext, doc_ids: pa.Array) -> tuple[np.ndarray, float]:
        """Each document's size in the budget's unit, and the units the budget allows."""
        budget = context.budget
        if budget is None or budget.counts == "docs":
            sizes = np.ones(len(doc_ids))
        else:
            if budget.counts == "tokens":
                files, column = context.inputs.signal("tokens").files, "score"
            else:
                files, column = context.inputs.documents("pool_documents").files, "n_bytes"
            paths = [context.workspace.absolute(p) for p in files]
            with duckdb.connect() as con:
                con.register("pool_ids", pa.table({"doc_id": doc_ids}))
                sizes = (
                    con.sql(
                        f"select coalesce(s.{column}, 0) as size from pool_ids p left join "
                        f"read_parquet({sql_files(paths)}) s using (doc_id) order by p.doc_id"
                    )
                    .to_arrow_table()["size"]
                    .to_numpy()
                    .astype(np.float64)
                )
        if self.config.keep_fraction is not None:
            return sizes, self.config.keep_fraction * sizes.sum()
        assert budget is not None
        return sizes, budget.units(len(doc_ids))

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        """Score = P(include) by the fastText classifier (domains), or the estimate (documents)."""
        if self.zoo is None:
            self.prepare(context)
        assert self.zoo is not None
        table = pool.read(["domain"])
        doc_ids = table["doc_id"]
        domains = np.asarray(table["domain"].to_pylist(), dtype=object)
        domains = np.where(domains == None, "", domains).astype(str)  # noqa: E711
        names, groups = np.unique(domains, return_inverse=True)
        unit = self.config.unit
        if unit == "auto":
            unit = "domain" if len(names) >= 2 else "document"
        if unit == "domain" and len(names) < 2:
            raise InputError(
                f"selector 'perplexity_correlation': unit=domain needs at least two domains; "
                f"corpus {context.corpus!r} has {len(names)}"
            )
        bpb, tokens = self._losses(context, doc_ids)
        sizes, allowed = self._sizes(context, doc_ids)
        errors = np.array([m.error for m in self.zoo.models])
        heldout = self._heldout_fraction()
        measured = np.ones(len(doc_ids), bool)
        if heldout:
            from gristmill.training.data import heldout_mask

            measured = heldout_mask(doc_ids.to_numpy(), heldout)
        report: dict[str, Any] = {
            "method": "perplexity_correlation", "unit": unit, "zoo": str(self.zoo.csv_path),
            "models": len(self.zoo.models), "estimator": self.config.estimator,
            "projection": self.config.projection, "heldout_fraction": heldout,
            "measured_documents": int(measured.sum()),
            "keep_fraction": float(allowed / sizes.sum()) if sizes.sum() else None,
        }  # fmt: skip
        if unit == "domain":
            columns = self._score_domains(context, pool, table, names, groups, bpb, tokens,
                                          measured, sizes, allowed, errors, report)  # fmt: skip
        else:
            columns = self._score_documents(bpb, tokens, measured, sizes, allowed, errors, report)
        out = pa.table({"doc_id": doc_ids, **columns})
        return out.replace_schema_metadata({"gristmill": json.dumps(report)})

    def _score_domains(
        self, context: SelectorContext, pool: PoolFeatures, table: pa.Table, names: np.ndarray,
        groups: np.ndarray, bpb: np.ndarray, tokens: np.ndarray, measured: np.ndarray,
        sizes: np.ndarray, allowed: float, errors: np.ndarray, report: dict[str, Any],
    ) -> dict[str, pa.Array]:  # fmt: skip
        x = pc_math.grouped_bits_per_byte(
            np.where(measured[None, :], bpb, np.nan), tokens, groups, len(names)
        )
        usable = np.all(np.isfinite(x), axis=0)
        if usable.sum() < 2:
            raise InputError(
                f"selector 'perplexity_correlation': fewer than two domains of {context.corpus!r} "
                "have scored text (is the held-out split empty? set heldout_fraction=0)"
            )
        estimate = np.full(len(names), np.nan)
        estimate[usable] = pc_math.ESTIMATORS[self.config.estimator](x[:, usable], errors)
        domain_sizes = np.bincount(groups, sizes, minlength=len(names))
        tau = domain_sizes / max(allowed, 1e-12)
        weight = np.zeros(len(names))
        present = usable & (domain_sizes > 0)
        if tau[present].sum() <= 1:  # the budget takes every domain whole
            weight[present] = tau[present] / tau[present].sum()
        else:
            weight[present] = pc_math.PROJECTIONS[self.config.projection](
                estimate[present], tau[present]
            )
        include = weight[groups] > 0
        texts = self._texts(context, pool)
        probability, classifier = fasttext_scores(
            texts, include, self.config, context.seed, pool.scratch
        )
        if probability is None:  # one class only: rank by how full the domain is
            probability = (weight / np.where(tau > 0, tau, 1))[groups]
        order = np.argsort(-np.nan_to_num(estimate, nan=-np.inf), kind="stable")
        report["domains"] = [
            {"domain": str(names[i]), "estimate": _finite(estimate[i]), "weight": float(weight[i]),
             "cap": float(tau[i]), "documents": int((groups == i).sum()),
             "mean_bits_per_byte": _finite(float(x[:, i].mean()))}
            for i in order
        ]  # fmt: skip
        report["errors"] = errors.tolist()
        report["classifier"] = classifier
        return {
            "score": pa.array(probability, pa.float64()),
            "domain_estimate": pa.array(estimate[groups], pa.float64()),
            "domain_weight": pa.array(weight[groups], pa.float64()),
            "include": pa.array(include),
        }

    def _score_documents(
        self, bpb: np.ndarray, tokens: np.ndarray, measured: np.ndarray, sizes: np.ndarray,
        allowed: float, errors: np.ndarray, report: dict[str, Any],
    ) -> dict[str, pa.Array]:  # fmt: skip
        # Per document there is no unseen text to hold out: every document is measured.
        del measured
        usable = np.all(np.isfinite(bpb), axis=0) & (tokens.min(axis=0) > 0)
        estimate = np.full(bpb.shape[1], np.nan)
        if usable.sum():
            estimate[usable] = pc_math.ESTIMATORS[self.config.estimator](bpb[:, usable], errors)
        weight = np.zeros(bpb.shape[1])
        present = usable & (sizes > 0)
        tau = sizes[present] / max(allowed, 1e-12)
        if present.any():
            weight[present] = (
                tau / tau.sum()
                if tau.sum() <= 1
                else pc_math.PROJECTIONS[self.config.projection](estimate[present], tau)
            )
        report["measured_documents"] = int(usable.sum())
        report["errors"] = errors.tolist()
        return {
            "score": pa.array(estimate, pa.float64()),
            "weight": pa.array(weight, pa.float64()),
        }

    def _texts(self, context: SelectorContext, pool: PoolFeatures) -> list[str]:
        """The pool's texts in doc_id order (members only, when the pool has a parent)."""
        shards = context.inputs.documents("pool_documents").files
        query = f"select d.text from read_parquet({sql_files(shards)}) d"
        if pool.members is not None:
            query += f" semi join read_parquet({sql_files([pool.members])}) m using (doc_id)"
        with duckdb.connect() as con:
            return con.sql(query + " order by d.doc_id").to_arrow_table()["text"].to_pylist()


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def fasttext_scores(
    texts: list[str],
    include: np.ndarray,
    config: PerplexityCorrelationConfig,
    seed: int,
    scratch: Path,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """P(include) of each text from a fastText bigram classifier trained on the labels.

    None when the labels have one class only (nothing to learn). Trained on one thread with
    the seed, so the same inputs give the same scores.
    """
    if include.all() or not include.any():
        return None, {"trained": False, "reason": "every document has the same label"}
    rng = np.random.default_rng(seed)
    train = np.arange(len(texts))
    if len(train) > config.classifier_max_docs:
        train = np.sort(rng.choice(train, config.classifier_max_docs, replace=False))
    settings = FastTextSettings(dim=config.classifier_dim, epochs=config.classifier_epochs)
    labels = ["include" if include[i] else "exclude" for i in train]
    model = fasttext_model.train([texts[i] for i in train], labels, settings, seed, scratch)
    probability = fasttext_model.probability(model, texts, "include")
    agreement = float(((probability >= 0.5) == include).mean())
    return probability, {
        "trained": True, "train_documents": len(train), "include_share": float(include.mean()),
        "train_accuracy": agreement, "dim": config.classifier_dim,
        "epochs": config.classifier_epochs, "word_ngrams": 2,
    }  # fmt: skip
