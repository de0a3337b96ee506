"""The `dedup` selector: exact and MinHash near-duplicates, clustered out of core in DuckDB.

Per shard (`score`, cached by shard content): doc_id, what the keep policy orders by, the
normalised-content xxh3 hash and, in near mode, the MinHash band hashes and signature. These
per-shard files are the persistent band index: new shards and new corpora are hashed once and
clustered against the stored files of earlier ones.

Over the pool (`score_set`): documents are numbered by the keep policy (older `against`
corpora first, then the policy, then source order, then doc_id), so the smallest number in a
cluster is its representative. Edges join every document to the smallest member of each
bucket it falls in (same content hash, or same band hash): O(k) per bucket, never O(k^2).
Near edges are optionally verified by the signatures' estimated Jaccard. Connected components
come from min-label propagation with pointer jumping, as DuckDB tables, so memory stays
bounded by DuckDB's memory_limit (spilling to the scratch directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, computed_field, model_validator

from gristmill.errors import InputError
from gristmill.selectors import minhash
from gristmill.selectors.base import (
    PoolFeatures,
    Section,
    SelectorConfig,
    SelectorContext,
    SetSelector,
)
from gristmill.selectors.explain import cluster_tables, example_clusters
from gristmill.selectors.requirements import Requirement, ScoredCorpus
from gristmill.storage.files import sql_files

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView

KeepPolicy = Literal["first", "longest", "priority"]


class DedupConfig(SelectorConfig):
    """Settings of the dedup selector (the keep policy and clustering never re-hash shards)."""

    set_fields = frozenset({"threshold", "bands", "rows", "keep", "against"})
    unkeyed_fields = frozenset({"memory_limit"})

    mode: Literal["near", "exact"] = Field("near", description="MinHash near-dups or exact hash")
    threshold: float = Field(0.8, gt=0, lt=1, description="near: Jaccard similarity threshold")
    num_perm: int = Field(256, ge=16, le=1024, description="near: MinHash permutations")
    shingle_size: int = Field(5, ge=1, le=64, description="near: words per shingle")
    seed: int = Field(1, description="near: datasketch permutation seed")
    bands: int | None = Field(None, ge=1, description="near: LSH bands (default: optimal)")
    rows: int | None = Field(None, ge=1, description="near: rows per band (default: optimal)")
    verify: bool = Field(
        True, description="near: keep only candidate edges whose estimated Jaccard >= threshold"
    )
    keep: KeepPolicy = Field("first", description="which member of a cluster is kept")
    priority_field: str | None = Field(None, description="keep=priority: meta key, higher wins")
    against: list[str] = Field(
        default_factory=list, description="earlier corpora whose documents win over this one's"
    )
    memory_limit: str = Field("2GB", description="DuckDB memory limit while clustering")

    @model_validator(mode="after")
    def _consistent(self) -> DedupConfig:
        if (self.keep == "priority") != (self.priority_field is not None):
            raise ValueError("keep=priority needs priority_field, and priority_field needs it")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        product = (self.bands or 0) * (self.rows or 0)
        if product > self.num_perm:
            raise ValueError(f"bands x rows ({product}) exceeds num_perm")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def banding(self) -> list[int] | None:
        """near: the (bands, rows) the band hashes are cut into; what threshold means per shard."""
        return list(banding(self)) if self.mode == "near" else None


def banding(config: DedupConfig) -> tuple[int, int]:
    """(bands, rows) for the config.

    Without verification: datasketch's optimum for the threshold (equal false positive and
    negative weights; 128 perms at 0.8 -> (9, 13)). With verification, candidates are cheap to
    reject, so the optimum weighs a false negative nine times a false positive (256 perms at
    0.8 -> (23, 11)).
    """
    if config.bands is not None and config.rows is not None:
        return config.bands, config.rows
    if config.verify:
        from datasketch.lsh import _optimal_param

        return tuple(_optimal_param(config.threshold, config.num_perm, 0.1, 0.9))  # type: ignore[return-value]
    return minhash.optimal_bands(config.threshold, config.num_perm)


def _priority(documents: pa.Table, field: str) -> pa.Array:
    """The numeric meta field `field` of each document (null where missing or not a number)."""
    values = []
    for meta in documents["meta"].to_pylist():
        value = json.loads(meta).get(field) if meta else None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        values.append(float(value) if ok else None)
    return pa.array(values, pa.float64())


def content_hashes(normalized: pa.LargeStringArray) -> pa.Array:
    """xxh3-64 of each normalised text."""
    binary = pc.cast(normalized, pa.large_binary()).to_pylist()
    return pa.array([xxhash.xxh3_64_intdigest(b) for b in binary], pa.uint64())


class DedupSelector(SetSelector):
    """Keeps one document per exact or near-duplicate cluster (score 1.0 kept, 0.0 dropped)."""

    name: ClassVar[str] = "dedup"
    version: ClassVar[str] = "1"
    Config = DedupConfig
    config: DedupConfig
    default_mode = "threshold"
    default_threshold = 0.5

    def score(self, documents: pa.Table) -> pa.Table:
        """Per-shard features: doc_id, order keys, content hash, band hashes and signature."""
        config = self.config
        normalized = minhash.normalize(documents["text"])
        columns: dict[str, Any] = {
            "doc_id": documents["doc_id"],
            "source": documents["source"],
            "source_line": documents["source_line"],
            "n_bytes": documents["n_bytes"],
            "content_hash": content_hashes(normalized),
        }
        if config.priority_field is not None:
            columns["priority"] = _priority(documents, config.priority_field)
        if config.mode == "near":
            bands, rows = banding(config)
            signatures = minhash.signatures(
                normalized, config.num_perm, config.seed, config.shingle_size
            )
            band_values = minhash.band_hashes(signatures, bands, rows)
            columns["bands"] = pa.FixedSizeListArray.from_arrays(
                pa.array(band_values.reshape(-1), pa.uint64()), bands
            )
            if config.verify:
                width = 4 * config.num_perm
                columns["signature"] = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(width), len(signatures), [None, pa.py_buffer(signatures.tobytes())]
                )
        return pa.table(columns)

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """Each `against` corpus's features, hashed by this selector (refusing the pool itself)."""
        config = self.config
        if context.corpus in config.against:
            raise InputError(
                f"selector dedup: against: names the corpus itself ({context.corpus!r})"
            )
        return [ScoredCorpus(f"against:{other}", other, self) for other in config.against]

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        """doc_id, score, cluster, cluster_size, duplicate_of and duplicate_corpus per document."""
        config = self.config
        sources: list[tuple[str, list[Path], Path | None]] = []
        for other in config.against:
            sources.append((other, context.inputs.signal(f"against:{other}").files, None))
        sources.append((context.corpus, pool.files, pool.members))
        return cluster_pool(sources, config, pool.scratch)

    def explain(self, view: SelectionView) -> list[Section]:
        """A few random duplicate clusters: every member (at most 20), the kept one first."""
        if not {"cluster", "duplicate_of"} <= view.columns:
            return []
        picked = view.rows(
            f"select cluster, any_value(cluster_size) as size from {view.signal} "
            f"where cluster is not null group by cluster order by hash(cluster, ?) limit ?",
            [view.seed, view.sample],
        )
        members = (
            f"select d.doc_id, d.domain, s.score = 1.0 as kept, s.duplicate_of, "
            f"left(d.text, ?) as text from {view.candidates} join {view.signal} "
            f"using (doc_id) where s.cluster = ? order by s.score desc, d.doc_id limit 20"
        )
        examples = example_clusters(view, picked, members)
        return [Section("clusters", examples, cluster_tables(examples))]


def _order(config: DedupConfig) -> str:
    """SQL ordering of documents by the keep policy: the first one is a cluster's kept one."""
    policy = {
        "first": "",
        "longest": "n_bytes desc, ",
        "priority": "priority desc nulls last, ",
    }[config.keep]
    return f"corpus_rank, {policy}source, source_line, doc_id"


def _features_sql(sources: list[tuple[str, list[Path], Path | None]], columns: str) -> str:
    parts = []
    for rank, (_, files, members) in enumerate(sources):
        if not files:
            continue
        part = f"select {rank} as corpus_rank, {columns} from read_parquet({sql_files(files)}) f"
        if members is not None:
            part += f" semi join read_parquet({sql_files([members])}) m on m.doc_id = f.doc_id"
        parts.append(part)
    return " union all ".join(parts)


def cluster_pool(
    sources: list[tuple[str, list[Path], Path | None]], config: DedupConfig, scratch: Path
) -> pa.Table:
    """Cluster every source's features; scores for the last source (the pool), earlier ones win.

    `sources` are (corpus, feature files, members file or None), oldest first.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    pool_rank = len(sources) - 1
    empty = pa.table(
        {
            "doc_id": pa.array([], pa.uint64()),
            "score": pa.array([], pa.float64()),
            "cluster": pa.array([], pa.uint64()),
            "cluster_size": pa.array([], pa.int64()),
            "duplicate_of": pa.array([], pa.uint64()),
            "duplicate_corpus": pa.array([], pa.string()),
        }
    )
    if not sources[-1][1]:
        return empty
    near = config.mode == "near"
    try:
        con = duckdb.connect(
            config={
                "memory_limit": config.memory_limit,
                "temp_directory": str(scratch / "duckdb"),
                "preserve_insertion_order": False,
            }
        )
    except duckdb.Error as error:  # a bad setting, such as memory_limit=lots
        raise InputError(f"dedup memory_limit {config.memory_limit!r}: {error}") from None
    try:
        priority = "priority" if config.keep == "priority" else "null::double as priority"
        columns = f"doc_id, source, source_line, n_bytes, content_hash, {priority}"
        con.execute(
            f"create table docs as select (row_number() over (order by {_order(config)}) - 1)"
            f"::bigint as node, corpus_rank, doc_id, content_hash "
            f"from ({_features_sql(sources, columns)})"
        )
        # Exact duplicates: an edge from each member to the smallest node of its content hash.
        con.execute(
            "create table edges as select node, root from ("
            "select node, min(node) over (partition by content_hash) as root from docs"
            ") where node <> root"
        )
        if near:
            _near_edges(con, sources, config)
        labels = _components(con)
        corpora = [name for name, _, _ in sources]
        con.execute("create table corpus_names (corpus_rank integer, corpus varchar)")
        con.executemany("insert into corpus_names values (?, ?)", list(enumerate(corpora)))
        table = con.sql(
            f"""
            with labelled as (
                select d.node, d.doc_id, coalesce(l.label, d.node) as label, d.corpus_rank
                from docs d left join {labels} l using (node)
            ), sizes as (
                select label, count(*) as cluster_size from labelled group by label
            )
            select x.doc_id,
                   case when x.label = x.node then 1.0 else 0.0 end::double as score,
                   case when s.cluster_size > 1 then r.doc_id end as cluster,
                   s.cluster_size::bigint as cluster_size,
                   case when x.label <> x.node then r.doc_id end as duplicate_of,
                   case when x.label <> x.node then c.corpus end as duplicate_corpus
            from labelled x
            join sizes s using (label)
            join docs r on r.node = x.label
            join corpus_names c on c.corpus_rank = r.corpus_rank
            where x.corpus_rank = ?
            order by x.doc_id
            """,
            params=[pool_rank],
        ).to_arrow_table()
    finally:
        con.close()
    return table.cast(empty.schema)


def _near_edges(
    con: duckdb.DuckDBPyConnection,
    sources: list[tuple[str, list[Path], Path | None]],
    config: DedupConfig,
) -> None:
    """Add band-bucket edges (each member to its bucket's smallest node), verified if asked."""
    con.execute(
        f"create table band_rows as select d.node, unnest(f.bands) as band_hash, "
        f"unnest(range(len(f.bands)))::smallint as band "
        f"from ({_features_sql(sources, 'doc_id, bands')}) f "
        f"join docs d on d.corpus_rank = f.corpus_rank and d.doc_id = f.doc_id"
    )
    con.execute(
        "create table near_edges as select distinct b.node, r.root from band_rows b join ("
        "select band, band_hash, min(node) as root from band_rows group by band, band_hash "
        "having count(*) > 1) r using (band, band_hash) where b.node <> r.root"
    )
    con.execute("drop table band_rows")
    if config.verify:
        _verify(con, sources, config)
    con.execute("insert into edges select node, root from near_edges")


def _verify(
    con: duckdb.DuckDBPyConnection,
    sources: list[tuple[str, list[Path], Path | None]],
    config: DedupConfig,
) -> None:
    """Drop near edges whose signatures agree on fewer than threshold x num_perm positions."""
    con.execute(
        f"create table signatures as select d.node, f.signature "
        f"from ({_features_sql(sources, 'doc_id, signature')}) f "
        f"join docs d on d.corpus_rank = f.corpus_rank and d.doc_id = f.doc_id "
        f"where d.node in (select node from near_edges union select root from near_edges)"
    )
    reader = con.sql(
        "select e.node, e.root, a.signature as a, b.signature as b from near_edges e "
        "join signatures a on a.node = e.node join signatures b on b.node = e.root"
    ).to_arrow_reader(65536)
    kept = []
    for batch in reader:
        if batch.num_rows == 0:
            continue
        left = _signature_matrix(batch.column(2), config.num_perm)
        right = _signature_matrix(batch.column(3), config.num_perm)
        similar = (left == right).mean(axis=1) >= config.threshold
        kept.append(
            pa.table({"node": batch.column(0), "root": batch.column(1)}).filter(pa.array(similar))
        )
    verified = pa.concat_tables(kept) if kept else pa.table(
        {"node": pa.array([], pa.int64()), "root": pa.array([], pa.int64())}
    )  # fmt: skip
    con.register("verified_edges", verified)
    con.execute("create or replace table near_edges as select node, root from verified_edges")
    con.unregister("verified_edges")
    con.execute("drop table signatures")


def _signature_matrix(column: pa.Array, num_perm: int) -> np.ndarray:
    """(rows, num_perm) uint32 from a binary column of packed signatures."""
    column = column.cast(pa.binary(4 * num_perm))
    data = column.buffers()[1]
    start = column.offset * 4 * num_perm
    values = np.frombuffer(data, np.uint32, len(column) * num_perm, start)
    return values.reshape(len(column), num_perm)


def _components(con: duckdb.DuckDBPyConnection) -> str:
    """Connected components of `edges` as a table (node, label = smallest node); its name.

    Min-label propagation with pointer jumping: each round a node takes the smallest label
    among itself and its neighbours, then the label of its label. Labels only decrease and
    always name a node of the same component, so the fixpoint is the component minimum.
    """
    con.execute(
        "create table labels as select node, node as label from "
        "(select node from edges union select root from edges)"
    )
    while True:
        con.execute(
            """
            create or replace table next_labels as
            with proposals as (
                select node, label from labels
                union all select e.node, l.label from edges e join labels l on l.node = e.root
                union all select e.root, l.label from edges e join labels l on l.node = e.node
            ), smallest as (
                select node, min(label) as label from proposals group by node
            )
            select a.node, b.label from smallest a join smallest b on b.node = a.label
            """
        )
        changed = con.execute(
            "select count(*) from next_labels n join labels l using (node) where n.label <> l.label"
        ).fetchone()
        con.execute("drop table labels")
        con.execute("alter table next_labels rename to labels")
        if not changed or changed[0] == 0:
            return "labels"
