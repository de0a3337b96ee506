"""The `dsir` selector: importance resampling towards a target corpus (Xie et al. 2023).

prepare() fits p_tgt (smoothed: Laplace, or towards the pool for a small target) and p_raw
over hashed unigram+bigram buckets; p_raw sums
per-shard bucket counts (the `dsir_counts` signal, a requirement scored and cached like any
signal), so a second target re-reads nothing of the pool. score() is the log importance weight
sum_b c_b(x) (log p_tgt_b - log p_raw_b), optionally length-normalised. Selection defaults to
Gumbel-top-k (sampling without replacement in proportion to the weights); `--mode topk` is the
deterministic variant.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from gristmill.errors import InputError
from gristmill.selectors.base import Scorer, Selector, SelectorConfig, SelectorContext
from gristmill.selectors.featurize import Hashing, ngram_buckets, tokenize
from gristmill.selectors.requirements import CorpusRead, Requirement, ScoredCorpus
from gristmill.selectors.selection import CandidatePool, Ranking, SelectOptions


class DsirConfig(SelectorConfig):
    """Features, smoothing, length normalisation and targets of DSIR."""

    num_buckets: int = Field(10_000, ge=16, description="hash buckets of unigrams and bigrams")
    hashing: Hashing = Field(
        "xxh3", description="xxh3 (fast) or sha256 (the data-selection package's exact buckets)"
    )
    smoothing: float = Field(1.0, gt=0, description="pseudo-count per target bucket")
    prior: Literal["auto", "uniform", "pool"] = Field(
        "auto",
        description="uniform: Laplace, `smoothing` per bucket (the data-selection package's "
        "rule); pool: the same pseudo-mass spread in proportion to the pool's distribution, so a "
        "bucket a small target never saw is weighed like the pool, not penalised; auto: pool "
        "for a target with fewer n-grams than buckets, else uniform",
    )
    length_norm: Literal["none", "per_token", "chunk"] = Field(
        "chunk",
        description="none: raw log weight (grows with length); per_token: divided by the "
        "document's n-gram count; chunk: averaged over chunk_words-word chunks, as the paper's "
        "equal-length chunks",
    )
    chunk_words: int = Field(128, ge=1, description="chunk length in words (length_norm=chunk)")
    separate_targets: bool = Field(
        False, description="one target per domain of the target corpus, each with its own quota"
    )
    target_proportions: dict[str, float] | None = Field(
        None, description="separate_targets: budget share per target domain; default: by size"
    )


class DsirCounts(Scorer):
    """Hashed unigram+bigram bucket counts of a shard: one `count` row per bucket."""

    name: ClassVar[str] = "dsir_counts"
    produces_scores: ClassVar[bool] = False
    per_document: ClassVar[bool] = False

    def __init__(self, num_buckets: int, hashing: Hashing) -> None:
        self.num_buckets = num_buckets
        self.hashing = hashing

    def config_dict(self) -> dict[str, Any]:
        """The buckets and their hash determine the counts."""
        return {"num_buckets": self.num_buckets, "hashing": self.hashing}

    def score(self, documents: pa.Table) -> pa.Table:
        """count per bucket, over every document of the shard."""
        _, buckets = ngram_buckets(tokenize(documents["text"]), self.num_buckets, self.hashing)
        counts = np.bincount(buckets, minlength=self.num_buckets).astype(np.int64)
        return pa.table({"count": counts})


class DsirSelector(Selector):
    """Log importance weight of each document under hashed n-gram models of target and pool."""

    name: ClassVar[str] = "dsir"
    version: ClassVar[str] = "1"
    Config = DsirConfig
    default_mode = "gumbel"
    requires_target = True
    candidate_columns: ClassVar[tuple[str, ...]] = ("target_scores",)

    config: DsirConfig

    def __init__(self, config: DsirConfig) -> None:
        super().__init__(config)
        self.log_ratio: np.ndarray | None = None  # (targets, buckets)
        self.targets: list[str] = []
        self.proportions: np.ndarray = np.ones(1)
        self.priors: list[str] = []

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The target's documents and the pool's bucket counts (both key every shard's scores)."""
        if context.target is None:
            raise InputError("selector 'dsir' needs a target corpus (--target)")
        counts = DsirCounts(self.config.num_buckets, self.config.hashing)
        return [
            CorpusRead("target", context.target),
            ScoredCorpus("pool_counts", context.corpus, counts, stage="shard"),
        ]

    def prepare(self, context: SelectorContext) -> None:
        """Fit p_tgt per target and p_raw over the whole pool."""
        cfg = self.config
        target_files = context.inputs.documents("target").files
        if not target_files:
            raise InputError(f"target corpus {context.target!r} has no documents")
        target = pa.concat_tables(
            [pq.read_table(path, columns=["text", "domain"]) for path in target_files]
        )
        if cfg.separate_targets:
            domains = np.asarray(target["domain"].to_pylist(), dtype=object)
            domains = np.where(domains == None, "", domains).astype(str)  # noqa: E711
        else:
            domains = np.full(target.num_rows, context.target)
        names, domain_index = np.unique(domains, return_inverse=True)
        tokens = tokenize(target["text"])
        docs, buckets = ngram_buckets(tokens, cfg.num_buckets, cfg.hashing)
        if len(buckets) == 0:
            raise InputError(f"target corpus {context.target!r} has no words")
        target_counts = np.bincount(
            domain_index[docs] * cfg.num_buckets + buckets,
            minlength=len(names) * cfg.num_buckets,
        ).reshape(len(names), cfg.num_buckets)
        # The reduce of the per-shard counts (scored as tasks): one running sum, one shard read
        # at a time, so memory is a few bucket vectors however many shards the pool has.
        raw = np.zeros(cfg.num_buckets, np.int64)
        for path in context.inputs.signal("pool_counts").files:
            raw += pq.read_table(path, columns=["count"])["count"].to_numpy()
        if raw.sum() == 0:
            raise InputError(f"corpus {context.corpus!r} has no words to select from")
        p_raw = raw / raw.sum()
        self.priors = [
            cfg.prior if cfg.prior != "auto" else ("pool" if n < cfg.num_buckets else "uniform")
            for n in target_counts.sum(axis=1)
        ]
        pseudo = {"uniform": np.full(cfg.num_buckets, cfg.smoothing),
                  "pool": cfg.smoothing * cfg.num_buckets * p_raw}  # fmt: skip
        smoothed = target_counts + np.stack([pseudo[prior] for prior in self.priors])
        # A bucket neither the pool nor the target has is never read: keep its log finite.
        smoothed = np.maximum(smoothed, 1e-300)
        p_tgt = smoothed / smoothed.sum(axis=1, keepdims=True)
        # A bucket no pool document has never enters a pool document's weight.
        self.log_ratio = np.log(p_tgt) - np.log(np.maximum(p_raw, 1e-300))[None, :]
        self.targets = [str(n) for n in names]
        sizes = target_counts.sum(axis=1).astype(np.float64)
        if cfg.target_proportions is not None:
            unknown = sorted(set(cfg.target_proportions) - set(self.targets))
            if unknown:
                raise InputError(
                    f"selector dsir: target_proportions names {unknown}, which are not domains "
                    f"of the target corpus (domains: {self.targets})"
                )
            sizes = np.array([cfg.target_proportions.get(t, 0.0) for t in self.targets])
        if sizes.sum() <= 0:
            raise InputError("selector dsir: target_proportions give no weight to any target")
        self.proportions = sizes / sizes.sum()

    def report(self) -> dict[str, Any]:
        """What variant ran: hashing, normalisation and targets (kept in the signal's metadata)."""
        cfg = self.config
        smoothing = sorted(
            {f"{'Laplace' if p == 'uniform' else 'pool-shaped'} pseudo-count {cfg.smoothing} "
             "per bucket on target counts" for p in self.priors}
        )  # fmt: skip
        return {
            "method": "dsir",
            "features": f"hashed unigrams+bigrams, {cfg.num_buckets} buckets, {cfg.hashing}",
            "smoothing": ", ".join(smoothing),
            "length_norm": cfg.length_norm
            + (f" ({cfg.chunk_words} words)" if cfg.length_norm == "chunk" else ""),
            "targets": dict(zip(self.targets, self.proportions.round(6).tolist(), strict=True)),
        }

    def log_weights(self, texts: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
        """(documents, targets) log importance weights, normalised as configured."""
        if self.log_ratio is None:
            raise RuntimeError("dsir: prepare() must run before scoring")
        cfg = self.config
        tokens = tokenize(texts)
        docs, buckets = ngram_buckets(tokens, cfg.num_buckets, cfg.hashing)
        weights = np.stack(
            [np.bincount(docs, weights=row[buckets], minlength=tokens.n_docs)
             for row in self.log_ratio],
            axis=1,
        )  # fmt: skip
        if cfg.length_norm == "per_token":
            features = np.bincount(docs, minlength=tokens.n_docs)
            weights = weights / np.maximum(features, 1)[:, None]
        elif cfg.length_norm == "chunk":
            chunks = np.maximum(np.ceil(tokens.words_per_doc() / cfg.chunk_words), 1)
            weights = weights / chunks[:, None]
        return weights

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, score (log weight towards the target mixture), per-target scores, words."""
        weights = self.log_weights(documents["text"])
        log_prop = np.log(np.maximum(self.proportions, 1e-300))
        mixed = np.logaddexp.reduce(weights + log_prop[None, :], axis=1)
        columns = {"doc_id": documents["doc_id"], "score": pa.array(mixed, pa.float64())}
        if self.config.separate_targets:
            columns["target_scores"] = pa.FixedSizeListArray.from_arrays(
                pa.array(weights.reshape(-1), pa.float64()), len(self.targets)
            )
        table = pa.table(columns)
        return table.replace_schema_metadata({"gristmill": json.dumps(self.report())})

    def select_members(
        self, pool: CandidatePool, units: float | None, options: SelectOptions
    ) -> None:
        """One quota per target when targets are separate (like data-selection); else as usual.

        Each target in turn takes its share of the budget, by its own score, from the documents
        no earlier target took.
        """
        if not self.config.separate_targets or "target_scores" not in pool.columns:
            return super().select_members(pool, units, options)
        if options.domain_weights:
            raise ValueError("separate_targets and domain weights both split the budget; use one")
        mode = options.mode or self.default_mode
        total = units if units is not None else pool.total_size()
        for index, share in enumerate(self.proportions):
            seeded = options.model_copy(update={"seed": options.seed + index})
            ranking = Ranking(score=f"target_scores[{index + 1}]")
            pool.take(ranking, total * float(share), mode, seeded)
        return None
