"""The `coreset` selector: a budgeted, diverse subset of the pool by its embeddings.

Per shard it stores embeddings (keyed by the embedder alone, so other settings never re-embed);
over the whole pool it runs one of three methods until the budget is reached: `deft` (DEFT-UCS
k-means clusters, easy and hard documents per cluster), `kcenter` (greedy farthest point) or
`facility_location` (lazy or stochastic greedy on a similarity graph). The chosen documents get
score = minus their greedy rank and the rest NaN, so the ordinary top-k under the same budget
keeps exactly the greedy prefix. The `cluster` column (k-means cluster, nearest centre or
assigned facility) is what `inspect` groups by.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from gristmill.devices import DEVICE_HELP, Device
from gristmill.errors import InputError
from gristmill.selectors import coreset_methods as methods
from gristmill.selectors.base import PoolFeatures, Section, SelectorConfig, SelectorContext, Table
from gristmill.selectors.explain import cluster_tables, example_clusters
from gristmill.selectors.featurize import (
    MAX_MEMORY_HELP,
    VECTOR_COLUMN,
    EmbeddingSetSelector,
    MaxMemory,
    check_memory,
    vector_width,
    vectors_of,
)
from gristmill.selectors.requirements import Requirement
from gristmill.selectors.tokens import budget_requirements
from gristmill.storage.files import sql_files

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView

Method = Literal["deft", "kcenter", "facility_location"]


class CoresetConfig(SelectorConfig):
    """Method, its settings, and the embedder."""

    # Only the embedder fields key the stored embeddings.
    unkeyed_fields = frozenset({"batch_size", "device", "max_memory"})
    set_fields = frozenset(
        {"method", "center", "clusters", "max_clusters", "alpha", "beta", "share", "greedy",
         "epsilon", "neighbors", "dense_max_bytes", "nprobe", "partition_size", "block_size"}
    )  # fmt: skip

    method: Method = Field("kcenter", description="deft, kcenter or facility_location")
    embedder: str = Field("hash", description="hash, minilm, or an encoder name or path")
    dim: int = Field(256, ge=8, le=4096, description="hash embedder: dimension")
    max_chars: int | None = Field(1000, ge=1, description="embed the first this many characters")
    batch_size: int = Field(64, ge=1, description="model embedders: batch size")
    device: Device | None = Field(None, description=f"torch device: {DEVICE_HELP}")
    center: bool = Field(
        True, description="subtract the pool's mean vector before normalising (hash vectors "
        "share a large common direction that says nothing about diversity)",
    )  # fmt: skip
    clusters: int | None = Field(None, ge=1, description="deft: K; default by the elbow")
    max_clusters: int = Field(15, ge=2, description="deft: largest K the elbow tries")
    alpha: float = Field(0.5, ge=0, le=1, description="deft: share of easy (central) documents")
    beta: float = Field(0.5, ge=0, le=1, description="deft: share of hard (outlying) documents")
    share: Literal["spread", "equal", "proportional"] = Field(
        "spread",
        description="deft: budget per cluster by its spread (summed distance to the centroid, "
        "so tight near-duplicate clusters get little), equal (the paper's rule) or by size",
    )
    greedy: Literal["lazy", "stochastic"] = Field(
        "lazy", description="facility_location: lazy (exact greedy) or stochastic greedy"
    )
    epsilon: float = Field(0.01, gt=0, lt=1, description="stochastic greedy: epsilon")
    neighbors: int = Field(10, ge=1, description="facility_location: kNN graph degree")
    dense_max_bytes: int = Field(
        256 << 20, ge=0, description="facility_location: dense n x n similarity up to this size"
    )
    nprobe: int = Field(16, ge=1, description="facility_location: FAISS IVF lists searched")
    partition_size: int = Field(
        200_000, ge=100, description="facility_location: greedy per random partition above this"
    )
    block_size: int = Field(512, ge=16, description="kcenter: points per distance block")
    max_memory: MaxMemory = Field(None, description=MAX_MEMORY_HELP)

    @model_validator(mode="after")
    def _shares(self) -> CoresetConfig:
        if self.alpha + self.beta > 1 + 1e-9:
            raise ValueError("alpha + beta must be at most 1 (the rest is drawn at random)")
        return self


class CoresetSelector(EmbeddingSetSelector):
    """A diverse subset under the budget: DEFT-UCS, k-center greedy or facility location."""

    name: ClassVar[str] = "coreset"
    version: ClassVar[str] = "1"
    Config = CoresetConfig
    default_mode = "topk"

    config: CoresetConfig

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The seed and the budget (greedy stops at it), and token counts for a token budget."""
        return budget_requirements(context)

    def prepare(self, context: SelectorContext) -> None:
        """Fail before embedding anything when there is no budget."""
        if context.budget is None:
            raise InputError(
                "selector 'coreset' needs a budget (--budget, e.g. 10%, 5000docs or 2Mtokens): "
                "the greedy methods stop when they reach it"
            )

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, embedding and byte size of each document of a shard."""
        embedded = self.embedder.score(documents)
        return embedded.append_column("n_bytes", documents["n_bytes"])

    def _sizes(self, context: SelectorContext, table: pa.Table) -> np.ndarray:
        """Each document's size in the budget's unit (tokens from the stored `tokens` signal)."""
        assert context.budget is not None
        counts = context.budget.counts
        if counts == "docs":
            return np.ones(table.num_rows)
        if counts == "bytes":
            return table["n_bytes"].to_numpy(zero_copy_only=False).astype(np.float64)
        files = context.inputs.signal("tokens").files
        with duckdb.connect() as con:
            con.register("pool_ids", table.select(["doc_id"]))
            tokens = con.sql(
                f"select p.doc_id, coalesce(t.score, 0) as tokens from pool_ids p left join "
                f"read_parquet({sql_files(files)}) t using (doc_id) order by p.doc_id"
            ).to_arrow_table()
        return tokens["tokens"].to_numpy(zero_copy_only=False).astype(np.float64)

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        """Score = minus the greedy rank for the chosen documents, NaN for the rest."""
        self.prepare(context)
        assert context.budget is not None
        memory = check_memory(
            self.name, self.memory_need(pool.count(), vector_width(pool)), self.config.max_memory
        )
        table = pool.read(["n_bytes", VECTOR_COLUMN])
        n = table.num_rows
        sizes = self._sizes(context, table)
        units = context.budget.units(n)
        report: dict[str, Any] = {
            "method": self.config.method, "embedder": self.embedder.config_dict(),
            "candidates": n, "budget": context.budget.text, "budget_units": units,
            "memory": memory,
        }  # fmt: skip
        scores = np.full(n, np.nan)
        cluster = np.full(n, -1, np.int64)
        if n:
            vectors = methods.normalised(vectors_of(table[VECTOR_COLUMN]), self.config.center)
            if units >= float(sizes.sum()) - 1e-9:
                report["note"] = "budget is at least the whole pool: every document is kept"
                result = methods.Coreset(np.arange(n), cluster, {})
            else:
                result = self._run(vectors, sizes, units, context.seed)
            scores[result.order] = -np.arange(len(result.order), dtype=np.float64)
            cluster = result.cluster
            report.update(result.report)
        doc_ids = table["doc_id"].to_numpy()
        cluster_ids = self._cluster_ids(cluster, doc_ids)
        columns = {
            "doc_id": table["doc_id"],
            "score": pa.array(scores, pa.float64()),
            # doc_id's type (uint64): kcenter and facility_location name clusters by doc_id.
            "cluster": pa.array(cluster_ids, table["doc_id"].type, mask=cluster < 0),
        }
        return pa.table(columns).replace_schema_metadata({"gristmill": json.dumps(report)})

    def memory_need(self, n: int, dim: int) -> dict[str, int]:
        """Bytes the set step holds at its peak for n vectors of dim, by part.

        Every method holds three copies of the pool's float32 vectors (read, centred,
        normalised); kcenter adds 24 bytes a document (distances, assignments), deft two more
        copies (k-means' own, the distances to the centroids); facility_location works per
        partition: a copy and a FAISS index of the partition's vectors and its similarities
        (dense n x n with two temporaries, or a kNN graph).
        """
        cfg = self.config
        need = {"vectors": 3 * n * dim * 4}
        if cfg.method == "kcenter":
            need["kcenter state"] = 24 * n
        elif cfg.method == "deft":
            need["k-means"] = 2 * n * dim * 4 + 24 * n
        else:
            p = min(n, cfg.partition_size)
            need["partition vectors"] = 2 * p * dim * 4
            dense = 4 * p * p
            edges = p * (cfg.neighbors + 2)
            need["similarity"] = 3 * dense if dense <= cfg.dense_max_bytes else 4 * edges * 12
        return need

    def explain(self, view: SelectionView) -> list[Section]:
        """Sizes (and kept counts) of the largest clusters, and a few random ones' members."""
        if "cluster" not in view.columns:
            return []
        grouped = (
            f"select s.cluster, count(*) as size, count(*) filter ({view.kept}) as kept "
            f"from {view.candidates} join {view.signal} using (doc_id) "
            f"where s.cluster is not null group by s.cluster"
        )
        sizes = view.rows(f"{grouped} order by size desc, cluster limit 20")
        picked = view.rows(
            f"select * from ({grouped}) order by hash(cluster, ?) limit ?", [view.seed, view.sample]
        )
        members = (
            f"select d.doc_id, d.domain, {view.kept} as kept, left(d.text, ?) as text "
            f"from {view.candidates} join {view.signal} using (doc_id) where s.cluster = ? "
            f"order by kept desc, s.score desc nulls last, d.doc_id limit 5"
        )
        examples = example_clusters(view, picked, members)
        largest = [Table("largest clusters", sizes)] if sizes else []
        return [
            Section("cluster_sizes", sizes, largest),
            Section("clusters", examples, cluster_tables(examples)),
        ]

    def _cluster_ids(self, cluster: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
        """k-means cluster numbers for deft; the centre's or facility's doc_id otherwise."""
        if self.config.method == "deft":
            return np.maximum(cluster, 0).astype(doc_ids.dtype)
        return np.where(cluster >= 0, doc_ids[np.maximum(cluster, 0)], 0)

    def _run(
        self, vectors: np.ndarray, sizes: np.ndarray, units: float, seed: int
    ) -> methods.Coreset:
        cfg = self.config
        n = len(vectors)
        if cfg.method == "kcenter":
            first = int(np.random.default_rng(seed).integers(n))
            return methods.kcenter_greedy(vectors, sizes, units, first, cfg.block_size, cfg.device)
        if cfg.method == "deft":
            distinct = len(np.unique(vectors, axis=0)) if cfg.clusters else 0
            chosen_k: dict[str, Any] = {"k": min(cfg.clusters, distinct)} if cfg.clusters else {}
            if not chosen_k:
                chosen_k = methods.choose_k(vectors, cfg.max_clusters, seed)
            labels, centroids, _ = methods.kmeans(vectors, chosen_k["k"], seed)
            result = methods.deft_ucs(
                vectors, sizes, units, labels, centroids, cfg.alpha, cfg.beta, cfg.share, seed
            )
            result.report["elbow"] = chosen_k
            return result
        return self._facility_location(vectors, sizes, units, seed)

    def _facility_location(
        self, vectors: np.ndarray, sizes: np.ndarray, units: float, seed: int
    ) -> methods.Coreset:
        """Greedy on the whole pool, or per random partition (INGENIOUS) above partition_size."""
        cfg = self.config
        parts = methods.partitions(len(vectors), cfg.partition_size, seed)
        total = float(sizes.sum())
        orders, clusters, reports = [], np.full(len(vectors), -1, np.int64), []
        for index, members in enumerate(parts):
            sim = methods.similarity(vectors[members], cfg.neighbors, cfg.dense_max_bytes,
                                     cfg.nprobe)  # fmt: skip
            # Each partition's greedy runs a little past its share so the merged prefix is whole.
            share = units * float(sizes[members].sum()) / total
            share = share if len(parts) == 1 else share + float(sizes[members].max())
            result = methods.facility_location(
                sim, sizes[members], share, cfg.greedy == "stochastic", cfg.epsilon, seed + index
            )
            orders.append(result.order)
            assigned = result.cluster >= 0
            clusters[members[assigned]] = members[result.cluster[assigned]]
            reports.append(result.report)
        order = methods.merge_partitions(parts, orders, sizes) if len(parts) > 1 else orders[0]
        report = dict(reports[0])
        if len(parts) > 1:
            report = {"partitions": len(parts), "objective_sum": math.fsum(r["objective"]
                      for r in reports), "greedy": reports[0]["greedy"]}  # fmt: skip
        return methods.Coreset(order, clusters, report)
