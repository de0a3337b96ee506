"""The `dedup` selector: exact and MinHash near-duplicates, clustered in stages out of core.

Per shard (`score`, cached by shard content): doc_id, what the keep policy orders by, the
normalised-content xxh3 hash and, in near mode, the MinHash band hashes and signature. These
per-shard files are the persistent band index: new shards and new corpora are hashed once and
clustered against the stored files of earlier ones.

Over the pool (`score_set`): documents are numbered by the keep policy (older `against`
corpora first, then the policy, then source order, then doc_id), so the smallest number in a
cluster is its representative. Edges join every document to the smallest member of each
bucket it falls in (same content hash, or same band hash): O(k) per bucket, never O(k^2).
Near edges come in stages, each a work unit (a task on the flow's runner): every feature
file's band rows are cut into band-hash partitions (a bucket lies in one partition), each
partition's bucket-minimum candidate edges are written as a file, then the distinct candidates
are verified by the signatures' estimated Jaccard in two halves per feature file (the node's
signature in its file, the root's in its own), so every file's signatures are read twice
whatever the partitions. Only the edge files meet in the connected components, found by
min-label propagation with pointer jumping over DuckDB tables, so memory stays bounded by
DuckDB's memory_limit (spilling to the scratch directory) in the flow process and in each task.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, computed_field, model_validator

from gristmill.errors import InputError
from gristmill.pipeline.map import WorkMap, serial_map
from gristmill.pipeline.units import work_unit
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
from gristmill.storage.files import sql_files, write_parquet_atomic

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView

KeepPolicy = Literal["first", "longest", "priority"]
# Band rows per partition by default: a partition's buckets group in well under 1 GB.
BAND_ROWS_PER_PARTITION = 50_000_000
MAX_PARTITIONS = 4096


class DedupConfig(SelectorConfig):
    """Settings of the dedup selector (the keep policy and clustering never re-hash shards)."""

    set_fields = frozenset({"threshold", "bands", "rows", "keep", "against"})
    unkeyed_fields = frozenset({"memory_limit", "partitions"})

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
    memory_limit: str = Field(
        "2GB", description="DuckDB memory limit of a clustering step (one at a time a process)"
    )
    partitions: int | None = Field(
        None, ge=1, le=MAX_PARTITIONS,
        description="near: band-hash partitions, a task each (default: from the pool size)",
    )  # fmt: skip

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
        return minhash.weighted_bands(config.threshold, config.num_perm, 0.1, 0.9)
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

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> Path:
        """doc_id, score, cluster, cluster_size, duplicate_of and duplicate_corpus per document."""
        config = self.config
        sources: list[tuple[str, list[Path], Path | None]] = []
        for other in config.against:
            sources.append((other, context.inputs.signal(f"against:{other}").files, None))
        sources.append((context.corpus, pool.files, pool.members))
        return cluster_pool(sources, config, pool.scratch, context.work_map)

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


def default_partitions(documents: int, bands: int) -> int:
    """Band-hash partitions for a pool: about BAND_ROWS_PER_PARTITION band rows in each."""
    return max(1, min(MAX_PARTITIONS, -(-documents * bands // BAND_ROWS_PER_PARTITION)))


def _partition_of(band_hashes: np.ndarray, partitions: int) -> np.ndarray:
    """The partition of each band hash: its hash range (the top 32 bits, cut into equal parts)."""
    return ((band_hashes >> np.uint64(32)) * np.uint64(partitions)) >> np.uint64(32)


def _connect(
    memory_limit: str, temp_directory: Path, database: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (in memory, or on `database`) spilling to `temp_directory`."""
    try:
        return duckdb.connect(
            str(database) if database is not None else ":memory:",
            config={
                "memory_limit": memory_limit,
                "temp_directory": str(temp_directory),
                "preserve_insertion_order": False,
            },
        )
    except duckdb.Error as error:  # a bad setting, such as memory_limit=lots
        raise InputError(f"dedup memory_limit {memory_limit!r}: {error}") from None


def _copy_atomic(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """Write a query's rows to a Parquet file under a temporary name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    con.execute(f"copy ({query}) to ? (format parquet)", [str(staging)])
    os.replace(staging, path)


def _register_files(con: duckdb.DuckDBPyConnection, files: list[str]) -> None:
    """Table feature_files: each feature file's name as read_parquet reports it, and number."""
    con.execute("create table feature_files (filename varchar, file integer)")
    numbered = [[name, number] for number, name in enumerate(files)]
    con.executemany("insert into feature_files values (?, ?)", numbered)


def _features_sql(sources: list[tuple[str, list[Path], Path | None]], columns: str) -> str:
    parts = []
    for rank, (_, files, members) in enumerate(sources):
        if not files:
            continue
        part = (
            f"select {rank} as corpus_rank, filename, {columns} "
            f"from read_parquet({sql_files(files)}, filename=true) f"
        )
        if members is not None:
            part += f" semi join read_parquet({sql_files([members])}) m on m.doc_id = f.doc_id"
        parts.append(part)
    return " union all ".join(parts)


SCORES_SCHEMA = pa.schema(
    [
        ("doc_id", pa.uint64()),
        ("score", pa.float64()),
        ("cluster", pa.uint64()),
        ("cluster_size", pa.int64()),
        ("duplicate_of", pa.uint64()),
        ("duplicate_corpus", pa.string()),
    ]
)


def cluster_pool(
    sources: list[tuple[str, list[Path], Path | None]],
    config: DedupConfig,
    scratch: Path,
    work_map: WorkMap = serial_map,
) -> Path:
    """Cluster every source's features; a Parquet file of scores for the last source (the pool).

    `sources` are (corpus, feature files, members file or None), oldest first; earlier ones
    win. Near edges come from band-hash partitions run through `work_map`; only their edge
    files meet here. The tables live in a database file under `scratch`, and its connection
    is closed while the partition units run, so that this process holds one DuckDB's memory at
    a time, and the scores go from DuckDB to the file without passing through Python.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "scores.parquet"
    if not sources[-1][1]:
        write_parquet_atomic(SCORES_SCHEMA.empty_table(), out)
        return out
    database = scratch / "cluster.duckdb"
    for stale in (database, database.with_name(f"{database.name}.wal")):
        stale.unlink(missing_ok=True)  # a killed run's tables: rebuilt from the features
    files = [str(f) for _, paths, _ in sources for f in paths]
    edge_files = [scratch / "edges" / "exact.parquet"]
    with _connect(config.memory_limit, scratch / "duckdb", database) as con:
        _register_files(con, files)
        priority = "priority" if config.keep == "priority" else "null::double as priority"
        columns = f"doc_id, source, source_line, n_bytes, content_hash, {priority}"
        con.execute(
            f"create table docs as select (row_number() over (order by {_order(config)}) - 1)"
            f"::bigint as node, corpus_rank, file, doc_id, content_hash "
            f"from ({_features_sql(sources, columns)}) join feature_files using (filename)"
        )
        # Exact duplicates: an edge from each member to the smallest node of its content hash.
        _copy_atomic(
            con,
            "select node, root from (select node, min(node) over (partition by content_hash) "
            "as root from docs) where node <> root",
            edge_files[0],
        )
        if config.mode == "near":
            documents = _count(con, "docs")
            con.execute(
                "copy (select file, doc_id, node from docs) to ? "
                "(format parquet, partition_by (file), overwrite)",
                [str(scratch / "nodes")],
            )
    if config.mode == "near":
        candidates = _candidate_edge_files(files, documents, config, scratch, work_map)
        if config.verify:
            with _connect(config.memory_limit, scratch / "duckdb", database) as con:
                routed = _route_candidates(con, candidates, scratch / "verify")
            edge_files += _verified_edge_files(files, routed, config, scratch, work_map)
        else:
            edge_files += candidates
    with _connect(config.memory_limit, scratch / "duckdb", database) as con:
        con.execute(
            "create table edges as select node, root from read_parquet(?)",
            [[str(p) for p in edge_files]],
        )
        labels = _components(con)
        corpora = [name for name, _, _ in sources]
        con.execute("create table corpus_names (corpus_rank integer, corpus varchar)")
        con.executemany("insert into corpus_names values (?, ?)", list(enumerate(corpora)))
        _copy_atomic(
            con,
            f"""
            with labelled as (
                select d.node, d.doc_id, coalesce(l.label, d.node) as label, d.corpus_rank
                from docs d left join {labels} l using (node)
            ), sizes as (
                select label, count(*) as cluster_size from labelled group by label
            )
            select x.doc_id::ubigint as doc_id,
                   case when x.label = x.node then 1.0 else 0.0 end::double as score,
                   (case when s.cluster_size > 1 then r.doc_id end)::ubigint as cluster,
                   s.cluster_size::bigint as cluster_size,
                   (case when x.label <> x.node then r.doc_id end)::ubigint as duplicate_of,
                   (case when x.label <> x.node then c.corpus end)::varchar
                       as duplicate_corpus
            from labelled x
            join sizes s using (label)
            join docs r on r.node = x.label
            join corpus_names c on c.corpus_rank = r.corpus_rank
            where x.corpus_rank = {len(sources) - 1}
            order by x.doc_id
            """,
            out,
        )
    database.unlink(missing_ok=True)
    return out


def _candidate_edge_files(
    files: list[str], documents: int, config: DedupConfig, scratch: Path, work_map: WorkMap
) -> list[Path]:
    """Band-bucket edge files, one per partition: cut bands per file, then edges per partition.

    Both steps are work units, so a flow runs them as tasks on its runner; they read the node
    numbers written under `scratch/nodes/file=<n>/`, one folder per feature file.
    """
    bands, _ = banding(config)
    partitions = config.partitions or default_partitions(documents, bands)
    nodes = scratch / "nodes"
    band_dir = scratch / "bands" / f"of{partitions}"
    cuts = [
        BandUnit(features, str(nodes / f"file={n}" / "*.parquet"), str(band_dir), partitions, n)
        for n, features in enumerate(files)
        if (nodes / f"file={n}").is_dir()  # absent: none of the file's documents is a member
    ]
    by_partition: dict[int, list[str]] = {}
    for cut in sorted(work_map(band_unit, cuts), key=lambda result: result.number):
        for partition, path in zip(cut.partitions, cut.paths, strict=True):
            by_partition.setdefault(partition, []).append(path)
    edge_dir = scratch / "edges" / f"of{partitions}"
    units = []
    for partition, paths in sorted(by_partition.items()):
        out = str(edge_dir / f"p{partition:04d}.parquet")
        spill = str(scratch / f"duckdb-p{partition:04d}")  # DuckDB instances share no spill dir
        units.append(EdgeUnit(partition, partitions, tuple(paths), out, config.memory_limit, spill))
    results = sorted(work_map(edge_unit, units), key=lambda result: result.partition)
    return [Path(result.path) for result in results]


def _route_candidates(
    con: duckdb.DuckDBPyConnection, candidates: list[Path], folder: Path
) -> dict[int, str]:
    """Write each distinct candidate edge under the feature file of its `node`, with the file
    of its `root`; the folders by file number (a pair found in several bands is verified once).
    """
    routed = folder / "by_node"
    shutil.rmtree(routed, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    con.execute(
        "copy (select c.node, c.root, r.file as root_file, n.file as node_file "
        "from (select distinct node, root from read_parquet(?)) c "
        "join docs n on n.node = c.node join docs r on r.node = c.root) "
        "to ? (format parquet, partition_by (node_file))",
        [[str(p) for p in candidates], str(routed)],
    )
    return {
        int(directory.name.split("=", 1)[1]): str(directory / "*.parquet")
        for directory in routed.glob("node_file=*")
    }


def _verified_edge_files(
    files: list[str], routed: dict[int, str], config: DedupConfig, scratch: Path, work_map: WorkMap
) -> list[Path]:
    """Candidate edges kept when their signatures agree: a join of two halves, each a work unit
    per feature file, so that every file's signatures are read twice, whatever the partitions.

    First each edge takes its node's signature in the node's file (written under the root's
    file); then, in the root's file, the root's signature, and the two are compared.
    """
    nodes, verify = scratch / "nodes", scratch / "verify"
    halves = [
        HalfUnit(files[n], str(nodes / f"file={n}" / "*.parquet"), edges,
                 str(verify / "by_root" / f"from{n:05d}"), n)
        for n, edges in sorted(routed.items())
    ]  # fmt: skip
    roots: set[int] = set()
    for half in work_map(half_unit, halves):
        roots.update(half.root_files)
    checks = [
        CheckUnit(files[g], str(nodes / f"file={g}" / "*.parquet"),
                  str(verify / "by_root" / "*" / f"root_file={g}" / "*.parquet"),
                  str(verify / "edges" / f"f{g:05d}.parquet"), g, config.threshold,
                  config.num_perm)
        for g in sorted(roots)
    ]  # fmt: skip
    results = sorted(work_map(check_unit, checks), key=lambda result: result.partition)
    return [Path(result.path) for result in results]


@dataclass
class BandFiles:
    """One feature file's band rows (node, band, band_hash): a file per partition they fall in."""

    number: int
    partitions: list[int]
    paths: list[str]
    rows: int


@dataclass(frozen=True)
class BandUnit:
    """Cut one feature file's band hashes into the partitions' band files."""

    features: str
    nodes: str  # the file's documents' node numbers (doc_id, node): a glob
    out_dir: str
    partitions: int
    number: int  # the feature file's number: names its band files

    def outputs_exist(self, result: BandFiles) -> bool:
        """True while every band file the result names is still there."""
        return all(Path(path).exists() for path in result.paths)

    def size_bytes(self) -> int | None:
        """The feature file's bytes: what the unit reads."""
        return Path(self.features).stat().st_size


def _span(numbers: list[int], width: int) -> str:
    """`00003` or `00003-00009`."""
    first, last = f"{numbers[0]:0{width}d}", f"{numbers[-1]:0{width}d}"
    return first if len(numbers) == 1 else f"{first}-{last}"


def _bands_title(group: list[BandUnit]) -> str:
    """`cut bands of feature file 00003`, `cut bands of feature files 00000-00007`."""
    plural = "s" if len(group) > 1 else ""
    return f"cut bands of feature file{plural} {_span([u.number for u in group], 5)}"


@work_unit("dedup-bands", BandFiles, _bands_title)
def band_unit(unit: BandUnit) -> BandFiles:
    """Read a feature file's bands with its node numbers; write each partition's rows."""
    with duckdb.connect() as con:
        rows = con.sql(
            "select n.node, b.band, b.band_hash from (select doc_id, unnest(bands) as band_hash, "
            "unnest(range(len(bands)))::smallint as band from read_parquet(?)) b "
            "join read_parquet(?) n using (doc_id)",
            params=[unit.features, unit.nodes],
        ).to_arrow_table()
    part = _partition_of(rows["band_hash"].to_numpy(), unit.partitions)
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part[order].astype(np.int64), minlength=unit.partitions)
    ordered = rows.take(pa.array(order))
    partitions, paths = [], []
    start = 0
    for partition, count in enumerate(counts.tolist()):
        if count:
            path = Path(unit.out_dir) / f"p{partition:04d}" / f"f{unit.number:05d}.parquet"
            write_parquet_atomic(ordered.slice(start, count), path)
            partitions.append(partition)
            paths.append(str(path))
        start += count
    return BandFiles(unit.number, partitions, paths, rows.num_rows)


@dataclass
class EdgeFile:
    """An edge file (node, root) of a partition or a feature file: candidates and edges kept."""

    partition: int
    path: str
    candidates: int
    edges: int


@dataclass(frozen=True)
class EdgeUnit:
    """Link every document of a partition's buckets to the bucket's smallest node."""

    partition: int
    partitions: int
    bands: tuple[str, ...]  # the partition's band files
    out: str
    memory_limit: str
    temp_directory: str

    def outputs_exist(self, result: EdgeFile) -> bool:
        """True while the edge file is still there."""
        return Path(result.path).exists()

    def size_bytes(self) -> int | None:
        """The partition's band file bytes: what the unit groups."""
        return sum(Path(path).stat().st_size for path in self.bands)


def _edges_title(group: list[EdgeUnit]) -> str:
    """`dedup edges of partition 3 of 16`, `dedup edges of partitions 0-7 of 16`."""
    plural = "s" if len(group) > 1 else ""
    numbers = _span([u.partition for u in group], 1)
    return f"dedup edges of partition{plural} {numbers} of {group[0].partitions}"


# One partition at a time per process: each holds up to memory_limit in its own DuckDB, and
# DuckDB already uses every core, so threads sharing a process would multiply the memory and
# gain little; runners with worker processes (Ray, Dask) still run partitions side by side.
_PARTITION_IN_PROCESS = threading.Lock()


@work_unit("dedup-edges", EdgeFile, _edges_title)
def edge_unit(unit: EdgeUnit) -> EdgeFile:
    """A partition's bucket-minimum candidate edges, as a file (verified afterwards)."""
    with _PARTITION_IN_PROCESS:
        return _partition_edges(unit)


def _partition_edges(unit: EdgeUnit) -> EdgeFile:
    con = _connect(unit.memory_limit, Path(unit.temp_directory))
    try:
        con.execute("create table band_rows as select * from read_parquet(?)", [list(unit.bands)])
        con.execute(
            "create table near_edges as select distinct b.node, r.root from band_rows b join ("
            "select band, band_hash, min(node) as root from band_rows group by band, band_hash "
            "having count(*) > 1) r using (band, band_hash) where b.node <> r.root"
        )
        con.execute("drop table band_rows")
        candidates = _count(con, "near_edges")
        _copy_atomic(con, "select node, root from near_edges", Path(unit.out))
    finally:
        con.close()
    return EdgeFile(unit.partition, unit.out, candidates, candidates)


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"select count(*) from {table}").fetchone()
    return int(row[0]) if row else 0


@dataclass
class HalfEdges:
    """One feature file's candidate edges with their node's signature, by the root's file."""

    number: int
    root_files: list[int]
    rows: int


@dataclass(frozen=True)
class HalfUnit:
    """Give each candidate edge whose node lies in a feature file that node's signature."""

    features: str
    nodes: str  # the file's (doc_id, node): a glob
    edges: str  # the edges routed to this file (node, root, root_file): a glob
    out_dir: str  # written as <out_dir>/root_file=<g>/*.parquet
    number: int

    def outputs_exist(self, result: HalfEdges) -> bool:
        """True while the unit's folder is still there."""
        return Path(self.out_dir).is_dir()

    def size_bytes(self) -> int | None:
        """The feature file's bytes: what the unit reads."""
        return Path(self.features).stat().st_size


def _files_title(verb: str) -> Callable[[list[Any]], str]:
    def title(group: list[Any]) -> str:
        plural = "s" if len(group) > 1 else ""
        return f"{verb} of feature file{plural} {_span([u.number for u in group], 5)}"

    return title


@work_unit("dedup-verify-nodes", HalfEdges, _files_title("sign candidate edges"))
def half_unit(unit: HalfUnit) -> HalfEdges:
    """The file's candidate edges with their node's signature, one folder per root file."""
    out = Path(unit.out_dir)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(staging, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as con:
        rows = con.execute(
            "copy (select e.node, e.root, e.root_file, f.signature as node_signature "
            "from read_parquet(?) e join read_parquet(?) m on m.node = e.node "
            "join read_parquet(?) f on f.doc_id = m.doc_id) "
            "to ? (format parquet, partition_by (root_file))",
            [unit.edges, unit.nodes, unit.features, str(staging)],
        ).fetchone()
    shutil.rmtree(out, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)  # no rows: an empty folder
    os.replace(staging, out)
    roots = sorted(int(d.name.split("=", 1)[1]) for d in out.glob("root_file=*"))
    return HalfEdges(unit.number, roots, int(rows[0]) if rows else 0)


@dataclass(frozen=True)
class CheckUnit:
    """Compare the signatures of the candidate edges whose root lies in a feature file."""

    features: str
    nodes: str  # the file's (doc_id, node): a glob
    halves: str  # the edges rooted in this file, with their node's signature: a glob
    out: str
    number: int
    threshold: float
    num_perm: int

    def outputs_exist(self, result: EdgeFile) -> bool:
        """True while the verified edge file is still there."""
        return Path(result.path).exists()

    def size_bytes(self) -> int | None:
        """The feature file's bytes: what the unit reads besides the edges."""
        return Path(self.features).stat().st_size


@work_unit("dedup-verify-roots", EdgeFile, _files_title("verify candidate edges"))
def check_unit(unit: CheckUnit) -> EdgeFile:
    """Keep the edges whose signatures agree on at least threshold x num_perm positions."""
    kept = []
    candidates = 0
    with duckdb.connect() as con:
        reader = con.sql(
            "select h.node, h.root, h.node_signature as a, f.signature as b "
            "from read_parquet(?) h join read_parquet(?) m on m.node = h.root "
            "join read_parquet(?) f on f.doc_id = m.doc_id",
            params=[unit.halves, unit.nodes, unit.features],
        ).to_arrow_reader(65536)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            candidates += batch.num_rows
            left = _signature_matrix(batch.column(2), unit.num_perm)
            right = _signature_matrix(batch.column(3), unit.num_perm)
            similar = (left == right).mean(axis=1) >= unit.threshold
            edges = pa.table({"node": batch.column(0), "root": batch.column(1)})
            kept.append(edges.filter(pa.array(similar)))
    verified = pa.concat_tables(kept) if kept else pa.table(
        {"node": pa.array([], pa.int64()), "root": pa.array([], pa.int64())}
    )  # fmt: skip
    write_parquet_atomic(verified, Path(unit.out))
    return EdgeFile(unit.number, unit.out, candidates, verified.num_rows)


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
