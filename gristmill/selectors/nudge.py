"""The `nudge` selector: distribution nudging by optimal transport (GOT-D, Kang et al. 2024).

Per shard it stores embeddings (the vector signal); over the whole pool it solves entropic OT
between the candidates and the target's embeddings and ranks each candidate by its calibrated dual
potential, most negative first: moving mass onto those candidates moves the pool's distribution
fastest towards the target. The score is minus the calibrated potential, so higher = keep.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from gristmill.devices import Device
from gristmill.errors import InputError
from gristmill.selectors.base import PoolFeatures, SelectorConfig, SelectorContext
from gristmill.selectors.featurize import (
    MAX_MEMORY_HELP,
    VECTOR_COLUMN,
    EmbeddingSetSelector,
    MaxMemory,
    check_memory,
    vector_width,
    vectors_of,
)
from gristmill.selectors.requirements import Requirement, ScoredCorpus, Setting
from gristmill.selectors.transport import SinkhornResult, sinkhorn
from gristmill.storage.files import sql_files


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class NudgeConfig(SelectorConfig):
    """Embedder, Sinkhorn settings, memory budget and the optional domain pre-filter."""

    # Only the embedder fields key the stored embeddings.
    unkeyed_fields = frozenset({"batch_size", "device", "max_memory"})
    set_fields = frozenset(
        {"epsilon", "momentum", "max_iter", "tol", "max_cost_bytes", "center",
         "prefilter_domains", "prefilter_sample"}
    )  # fmt: skip

    embedder: str = Field("hash", description="hash, minilm, or an encoder name or path")
    dim: int = Field(1024, ge=8, le=4096, description="hash embedder: dimension")
    max_chars: int | None = Field(1000, ge=1, description="embed the first this many characters")
    batch_size: int = Field(64, ge=1, description="model embedders: batch size")
    epsilon: float = Field(0.05, gt=0, description="entropic regularisation, relative to mean cost")
    momentum: float = Field(1.25, ge=1.0, lt=2.0, description="Sinkhorn over-relaxation")
    max_iter: int = Field(2000, ge=1, description="Sinkhorn iterations at most")
    tol: float = Field(1e-4, gt=0, description="stop when the target marginal's L1 error is below")
    max_cost_bytes: int = Field(
        1 << 30, ge=1024, description="keep the cost matrix whole only when it fits this"
    )
    device: Device | None = Field(None, description="torch device; default cuda when present")
    center: bool = Field(
        True,
        description="subtract the candidates' mean vector (then re-normalise) before transport: "
        "the direction every document shares carries no signal about the target",
    )
    prefilter_domains: int | None = Field(
        None, ge=1, description="keep only the candidates of the k domains closest by OT distance"
    )
    prefilter_sample: int = Field(2000, ge=10, description="documents per domain for pre-filter")
    max_memory: MaxMemory = Field(None, description=MAX_MEMORY_HELP)


class NudgeSelector(EmbeddingSetSelector):
    """Ranks candidates by the OT gradient towards the target (calibrated dual potential)."""

    name: ClassVar[str] = "nudge"
    version: ClassVar[str] = "1"
    Config = NudgeConfig
    default_mode = "topk"
    requires_target = True

    config: NudgeConfig

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The target's embeddings, plus the seed when it samples domains for the pre-filter."""
        if context.target is None:
            raise InputError("selector 'nudge' needs a target corpus (--target)")
        needs: list[Requirement] = [ScoredCorpus("target", context.target, self.embedder)]
        if self.config.prefilter_domains:
            needs.append(Setting("seed", context.seed))
        return needs

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, domain and embedding of each document of a shard."""
        embedded = self.embedder.score(documents)
        return embedded.append_column("domain", documents["domain"])

    def _target_vectors(self, context: SelectorContext) -> np.ndarray:
        files = context.inputs.signal("target").files  # shard-hash order, as always
        if not files:
            raise InputError(f"target corpus {context.target!r} has no documents")
        with duckdb.connect() as con:
            table = con.sql(f"select {VECTOR_COLUMN} from read_parquet({sql_files(files)})")
            vectors = vectors_of(table.to_arrow_table()[VECTOR_COLUMN])
        if len(vectors) == 0:
            raise InputError(f"target corpus {context.target!r} has no documents")
        return vectors

    def _solve(self, x: np.ndarray, y: np.ndarray) -> SinkhornResult:
        cfg = self.config
        return sinkhorn(
            x, y, cfg.epsilon, cfg.momentum, cfg.max_iter, cfg.tol, cfg.max_cost_bytes,
            cfg.device,
        )  # fmt: skip

    def _prefilter(
        self, domains: np.ndarray, vectors: np.ndarray, target: np.ndarray, seed: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Mask of candidates in the k domains closest to the target, and each domain's distance."""
        rng = np.random.default_rng(seed)
        distances = {}
        for domain in np.unique(domains):
            members = np.flatnonzero(domains == domain)
            if len(members) > self.config.prefilter_sample:
                members = np.sort(rng.choice(members, self.config.prefilter_sample, replace=False))
            distances[str(domain)] = self._solve(vectors[members], target).ot_cost
        keep = sorted(distances, key=lambda d: (distances[d], d))[: self.config.prefilter_domains]
        return np.isin(domains, keep), distances

    def memory_need(self, n: int, m: int, dim: int) -> dict[str, int]:
        """Bytes the set step holds at its peak for n candidates and m target vectors of dim.

        Four copies of the candidates' float32 vectors (read, centred, normalised, the solver's),
        as many of the target's, and the cost matrix: whole when it fits max_cost_bytes (plus the
        solver's block temporaries), else blocks that together fit it.
        """
        whole = 4 * n * m
        cost = whole + min(3 * whole, 3 << 26) if whole <= self.config.max_cost_bytes else (
            self.config.max_cost_bytes
        )  # fmt: skip
        return {"candidate vectors": 4 * n * dim * 4, "target vectors": 4 * m * dim * 4,
                "cost matrix": cost}  # fmt: skip

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        """Score = minus the calibrated dual potential of each candidate (higher = keep)."""
        target_files = context.inputs.signal("target").files
        m = sum(pq.ParquetFile(path).metadata.num_rows for path in target_files)
        need = self.memory_need(pool.count(), m, vector_width(pool))
        memory = check_memory(self.name, need, self.config.max_memory)
        table = pool.read(["domain", VECTOR_COLUMN])
        target = self._target_vectors(context)
        doc_ids = table["doc_id"]
        scores = np.full(table.num_rows, np.nan)
        potentials = np.full(table.num_rows, np.nan)
        report: dict[str, Any] = {"method": "nudge", "embedder": self.embedder.config_dict(),
                                  "candidates": table.num_rows, "target": len(target),
                                  "memory": memory}  # fmt: skip
        if table.num_rows:
            vectors = vectors_of(table[VECTOR_COLUMN])
            domains = np.asarray(table["domain"].to_pylist(), dtype=object)
            domains = np.where(domains == None, "", domains).astype(str)  # noqa: E711
            if self.config.center:
                mean = vectors.mean(axis=0, keepdims=True)
                vectors, target = _normalised(vectors - mean), _normalised(target - mean)
                report["centered"] = True
            keep = np.ones(table.num_rows, dtype=bool)
            if self.config.prefilter_domains is not None:
                keep, distances = self._prefilter(domains, vectors, target, context.seed)
                report["domain_ot_cost"] = distances
            result = self._solve(vectors[keep], target)
            calibrated = result.f - result.f.mean()
            potentials[keep] = calibrated
            scores[keep] = -calibrated
            report["sinkhorn"] = result.report()
        columns = {
            "doc_id": doc_ids,
            "score": pa.array(scores, pa.float64()),
            "potential": pa.array(potentials, pa.float64()),
        }
        return pa.table(columns).replace_schema_metadata({"gristmill": json.dumps(report)})
