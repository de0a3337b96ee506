"""A whole transform step: rewrite a corpus's text into a derived corpus, shard by shard.

The derived corpus is a normal corpus (list, stats, select and materialise it) whose documents
keep their parent's `doc_id`: ids are unique per corpus (ingest hashes the corpus name into
them), so lineage is a join on doc_id, and the held-out split, a function of doc_id, agrees
between a corpus and its cleaned form. A derived shard adds a `changes` column: JSON of what each
transform changed in that document ({"pii": {"email": 2}, "lines": {"removed_lines": 3}}).
Documents a transform empties are dropped and kept in the derived corpus's rejects with the
reason `emptied_by_<transform>`, so read = documents + rejected holds as for an ingest.

Caching: each output shard is named by its chunk key, a hash of the parent shard's content hash
and the chain's config hash (names, versions, settings, and what a fitted transform learned from
the corpus). A re-run skips recorded chunks; a killed run resumes, its half-written files
cleared. Re-running under the same name with other settings, or after the parent grew (which
changes what `lines` learned), rebuilds the derived corpus: shards of the old key are dropped
first, so the corpus only ever holds shards of the config its record names.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from gristmill import progress
from gristmill.errors import InputError
from gristmill.pipeline.curation import score_shards
from gristmill.pipeline.ingestion import as_workspace
from gristmill.pipeline.map import WorkMap, batched_by_time, serial_map
from gristmill.pipeline.units import chunk_outputs_exist, unit_arguments, work_unit
from gristmill.selectors.base import Scorer
from gristmill.selectors.scoring import _code_version, plan_scoring, signal_files
from gristmill.storage import catalog
from gristmill.storage.catalog import ChunkResult, ShardInfo
from gristmill.storage.files import file_hash, sql_files, write_parquet_atomic
from gristmill.storage.ingest import RejectWriter, clear_partial_chunk
from gristmill.storage.readers import Reject
from gristmill.storage.workspace import Workspace, validate_name
from gristmill.transforms.base import SpecLike, Transform, TransformSpec, chain_json, chain_record
from gristmill.transforms.base import parse_specs as parse_transform_specs

CHANGES_COLUMN = "changes"
METADATA_KEY = b"gristmill"


class StatisticsScorer(Scorer):
    """A transform's per-shard statistics as a stored signal, so the corpus pass is cached
    and runs through the work map like any scoring. The statistics are of the text as the
    transform will see it: after the transforms before it in the chain."""

    produces_scores: ClassVar[bool] = False
    per_document: ClassVar[bool] = False

    def __init__(self, transform: Transform, before: tuple[Transform, ...], before_key: str):
        self.transform = transform
        self.before = before
        self.before_key = before_key
        self.name = f"{transform.name}_statistics"  # type: ignore[misc]

    def config_dict(self) -> dict[str, Any]:
        """The transform's version, the settings its statistics depend on, and the chain
        before it."""
        settings = self.transform.statistics_settings()
        return {"version": self.transform.version, "before": self.before_key, **settings}

    def score(self, documents: pa.Table) -> pa.Table:
        """The transform's statistics of one shard (rewritten by the chain before it)."""
        if self.before:
            texts, keep = [], []
            for text, domain in zip(
                documents["text"].to_pylist(), documents["domain"].to_pylist(), strict=True
            ):
                new_text, _, emptied_by = rewrite(self.before, text, domain or "")
                keep.append(emptied_by is None)
                if emptied_by is None:
                    texts.append(new_text)
            documents = documents.filter(pa.array(keep, pa.bool_()))
            column = documents.schema.get_field_index("text")
            documents = documents.set_column(column, "text", pa.array(texts, pa.string()))
        return self.transform.shard_statistics(documents)


def chunk_key(shard_hash: str, config_hash: str) -> str:
    """The derived chunk (and shard file) made from a parent shard under a config."""
    return "t" + xxhash.xxh3_64_hexdigest(f"{shard_hash}\x00{config_hash}".encode())


@dataclass(frozen=True)
class TransformUnit:
    """Rewrite one shard of a corpus into a shard of the derived corpus."""

    root: str
    corpus: str
    shard: dict
    output: str
    transforms: tuple[Transform, ...]
    config_hash: str

    def outputs_exist(self, result: ChunkResult) -> bool:
        """True while every file the result names is still there."""
        return chunk_outputs_exist(self.root, result)

    def size_bytes(self) -> int | None:
        """The parent shard's text bytes: what the chain reads."""
        return int(self.shard["text_bytes"])

    def title(self) -> str:
        """What the unit does, for a person: `transform shard t1a2b of web into web-clean`."""
        return (
            f"transform {self.shard['path'].rsplit('/', 1)[-1]} of {self.corpus} into {self.output}"
        )


def _transform_title(group: list[TransformUnit]) -> str:
    """`transform t1a2b.parquet of web into web-clean (+3 shards)`."""
    more = f" (+{len(group) - 1} shards)" if len(group) > 1 else ""
    return group[0].title() + more


@work_unit("transform-shard", ChunkResult, _transform_title)
def transform_unit(unit: TransformUnit) -> ChunkResult:
    """Rewrite one shard (the worker side of a transform)."""
    return transform_shard(**unit_arguments(unit))


def rewrite(
    transforms: tuple[Transform, ...] | list[Transform], text: str, domain: str
) -> tuple[str, dict[str, dict[str, int]], str | None]:
    """Run the chain over one text: the new text, each transform's changes, and the name of
    the transform that emptied it (None when text is left)."""
    changes: dict[str, dict[str, int]] = {}
    for transform in transforms:
        result = transform.apply(text, domain)
        if result.changes:
            changes[transform.name] = result.changes
        text = result.text
        if not text.strip():
            return "", changes, transform.name
    return text, changes, None


def transform_shard(
    root: str,
    corpus: str,
    shard: dict,
    output: str,
    transforms: tuple[Transform, ...],
    config_hash: str,
) -> ChunkResult:
    """Rewrite one parent shard into one derived shard and its rejects; safe to re-run."""
    ws = Workspace(root)
    key = chunk_key(shard["content_hash"], config_hash)
    clear_partial_chunk(ws, output, key)
    documents = pq.read_table(ws.absolute(shard["path"]))
    texts, domains = documents["text"].to_pylist(), documents["domain"].to_pylist()
    new_texts: list[str] = []
    records: list[bytes] = []
    keep: list[bool] = []
    rejects: list[Reject] = []
    totals: dict[str, Counter[str]] = {}
    changed: Counter[str] = Counter()
    for i, (text, domain) in enumerate(zip(texts, domains, strict=True)):
        new_text, changes, emptied_by = rewrite(transforms, text, domain or "")
        keep.append(emptied_by is None)
        if emptied_by is not None:
            rejects.append(_emptied(documents, i, emptied_by, changes, corpus))
            continue
        new_texts.append(new_text)
        records.append(orjson.dumps(changes, option=orjson.OPT_SORT_KEYS))
        for name, counts in changes.items():
            totals.setdefault(name, Counter()).update(counts)
            changed[name] += 1
    result = ChunkResult(chunk_key=key, source=shard["path"], records_read=documents.num_rows)
    kept = documents.filter(pa.array(keep, pa.bool_())) if rejects else documents
    result.documents, result.rejected = kept.num_rows, len(rejects)
    if kept.num_rows:
        summary = {"changes": {n: dict(c) for n, c in totals.items()}, "changed": dict(changed)}
        table = _rewritten(kept, new_texts, records, summary)
        path = ws.corpus_dir(output) / f"{key}.parquet"
        write_parquet_atomic(table, path)
        text_bytes = int(pc.sum(table["n_bytes"]).as_py() or 0)
        result.shards = [
            ShardInfo(ws.relative(path), table.num_rows, text_bytes, path.stat().st_size,
                      file_hash(path))
        ]  # fmt: skip
    rejects_path = ws.rejects_dir(output) / f"{key}.parquet"
    writer = RejectWriter(rejects_path)
    writer.write(rejects)
    if writer.close():
        result.rejects_path = ws.relative(rejects_path)
    result.reject_counts = dict(writer.counts)
    return result


def _rewritten(
    kept: pa.Table, texts: list[str], records: list[bytes], summary: dict[str, Any]
) -> pa.Table:
    """The kept documents with their new text, byte counts and change records; every other
    column as the parent has it (a parent's own `changes` is replaced: the catalog chains)."""
    text = pa.array(texts, pa.string())
    table = kept.set_column(kept.schema.get_field_index("text"), "text", text)
    n_bytes = pc.cast(pc.binary_length(text), pa.int64())
    table = table.set_column(table.schema.get_field_index("n_bytes"), "n_bytes", n_bytes)
    changes = pa.array([r.decode() for r in records], pa.string())
    if CHANGES_COLUMN in table.column_names:
        table = table.drop_columns([CHANGES_COLUMN])
    table = table.append_column(CHANGES_COLUMN, changes)
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps(summary, sort_keys=True).encode()
    return table.replace_schema_metadata(metadata)


def _emptied(
    documents: pa.Table, i: int, emptied_by: str, changes: dict[str, Any], corpus: str
) -> Reject:
    """A reject for a document a transform emptied: the original record, and what went."""
    row = {c: documents[c][i].as_py() for c in ("doc_id", "text", "meta")}
    detail = f"doc_id {row['doc_id']} of corpus {corpus!r}: emptied by {emptied_by} " + (
        json.dumps(changes, sort_keys=True)
    )
    source, line = documents["source"][i].as_py(), documents["source_line"][i].as_py()
    return Reject(source, int(line or 0), f"emptied_by_{emptied_by}", detail, orjson.dumps(row))


@dataclass
class TransformReport:
    """What a transform step did: the chain, shards rewritten and reused, documents kept and
    dropped, and the total changes per transform in the derived corpus."""

    corpus: str
    parent: str
    transforms: list[dict[str, Any]]
    config_hash: str
    shards: int
    shards_done: int
    shards_reused: int
    shards_dropped: int
    documents_read: int
    documents: int
    dropped: int
    dropped_by_reason: dict[str, int]
    changes: dict[str, dict[str, int]]
    changed_documents: dict[str, int]
    statistics: dict[str, str] = field(default_factory=dict)  # transform -> what it learned

    def as_dict(self) -> dict[str, Any]:
        """The transform flow's result (the keys the CLI and the recipe flow read)."""
        return asdict(self)


def transform(
    workspace: Workspace | str | os.PathLike[str],
    corpus: str,
    transforms: str | list[SpecLike],
    name: str,
    *,
    recipe: dict[str, Any] | None = None,
    work_map: WorkMap = serial_map,
) -> TransformReport:
    """Rewrite a corpus's text with a chain of transforms into the derived corpus `name`
    (cached by parent shard and config; resumable)."""
    chain = build_chain(transforms, corpus, name)
    ws = as_workspace(workspace)
    with ws.write_lock(f"transform {corpus} into {name}"):
        with ws.catalog() as con:
            check_names(con, corpus, name)
            shards = catalog.shards(con, corpus)
            parent_version = catalog.corpus_version(con, corpus)
            files = ws.shard_files(con, corpus)
        fitted = _fit(ws, corpus, chain, files, work_map)
        config_hash = xxhash.xxh3_64_hexdigest(chain_json(list(chain), fitted).encode())
        keys = {chunk_key(s["content_hash"], config_hash) for s in shards}
        record = {
            "corpus": name, "parent": corpus, "parent_version": parent_version,
            "transforms": json.dumps(chain_record(list(chain)), sort_keys=True),
            "config_hash": config_hash, "code_version": _code_version(),
            "recipe": json.dumps(recipe, default=str) if recipe else None, "status": "running",
            "summary": None, "finished_at": None,
        }  # fmt: skip
        with ws.catalog() as con:
            done = catalog.done_chunks(con, name)
            stale = catalog.drop_chunks(con, name, done - keys)
            catalog.record_transform(con, record)
        for path in stale:  # the catalog no longer names them
            ws.absolute(path).unlink(missing_ok=True)
        todo = [s for s in shards if chunk_key(s["content_hash"], config_hash) not in done]
        units = [TransformUnit(str(ws.root), corpus, s, name, chain, config_hash) for s in todo]
        documents = sum(int(s["rows"]) for s in todo)
        bar = progress.track(f"transform {corpus} into {name}", documents, unit="docs")
        finished = progress.advancing(work_map(transform_unit, units), bar, _documents_read)
        for batch in batched_by_time(finished):
            with ws.catalog() as con:
                for result in batch:
                    catalog.record_chunk(con, name, result)
        bar.close()
        report = _report(ws, name, corpus, chain, config_hash, fitted, len(todo), len(done & keys))
        report.shards_dropped = len(done - keys)
        summary = {k: getattr(report, k) for k in ("documents_read", "documents", "dropped",
                   "dropped_by_reason", "changes", "changed_documents", "statistics")}  # fmt: skip
        with ws.catalog() as con:
            record.update(status="done", summary=json.dumps(summary, sort_keys=True))
            con.execute(
                "update transforms set status = ?, summary = ?, finished_at = current_timestamp "
                "where corpus = ?",
                [record["status"], record["summary"], name],
            )
    return report


def _documents_read(result: ChunkResult) -> int:
    """The parent documents one rewritten shard read (kept and emptied alike)."""
    return sum(shard.rows for shard in result.shards) + result.rejected


def build_chain(transforms: str | list[SpecLike], corpus: str, name: str) -> tuple[Transform, ...]:
    """The transforms of a step, built (InputError for an unknown one or a bad setting), and
    the derived corpus's name checked as a new name other than its parent's."""
    chain = tuple(spec.build() for spec in parse_transform_specs(transforms))
    validate_name("corpus", name)
    if name == corpus:
        raise InputError(f"transform: the derived corpus needs a new name, not {corpus!r}")
    return chain


def check_names(con: Any, corpus: str, name: str) -> None:
    """The parent exists; the output name is free, or the corpus this parent's transform made."""
    catalog.require_corpus(con, corpus)
    catalog.check_corpus_name(con, name)
    _check_output(con, corpus, name)


def _check_output(con: Any, corpus: str, name: str) -> None:
    """Refuse an output name taken by an ingested corpus, or by one derived from another."""
    existing = catalog.transform_record(con, name)
    if existing is None and name in catalog.corpus_names(con):
        raise InputError(
            f"corpus {name!r} exists and was ingested, not made by a transform; "
            "choose a new name for the derived corpus"
        )
    if existing is not None and existing["parent"] != corpus:
        raise InputError(
            f"corpus {name!r} was made from {existing['parent']!r}, not {corpus!r}; "
            "choose a new name for the derived corpus"
        )


def _fit(
    ws: Workspace,
    corpus: str,
    chain: tuple[Transform, ...],
    files: list[Any],
    work_map: WorkMap,
) -> dict[str, str]:
    """Run each corpus-wide transform's statistics through the map (cached as a signal),
    then fit it; what each learned, by name."""
    fitted: dict[str, str] = {}
    for position, transform in enumerate(chain):
        if not transform.needs_statistics():
            continue
        before = chain[:position]
        scorer = StatisticsScorer(transform, before, chain_json(list(before), fitted))
        plan = plan_scoring(ws, corpus, scorer)
        score_shards(ws, plan, scorer, f"count {transform.name} statistics of {corpus}", work_map)
        fitted[transform.name] = transform.fit(signal_files(ws, plan), files)
    return fitted


def _report(
    ws: Workspace,
    name: str,
    parent: str,
    chain: tuple[Transform, ...],
    config_hash: str,
    fitted: dict[str, str],
    done: int,
    reused: int,
) -> TransformReport:
    """Totals of the derived corpus from the catalog and its shards' footers."""
    with ws.catalog(read_only=True) as con:
        stats = catalog.rows(
            con,
            "select coalesce(sum(records_read), 0)::bigint as read, "
            "coalesce(sum(documents), 0)::bigint as documents, "
            "coalesce(sum(rejected), 0)::bigint as rejected from chunks where corpus = ?",
            [name],
        )[0]
        reasons = dict(
            con.execute(
                "select reason, sum(count)::bigint from rejects where corpus = ? "
                "group by reason order by reason",
                [name],
            ).fetchall()
        )
        files = ws.shard_files(con, name)
    changes: dict[str, Counter[str]] = {}
    changed: Counter[str] = Counter()
    for path in files:
        summary = json.loads((pq.read_schema(path).metadata or {}).get(METADATA_KEY, b"{}"))
        for transform, counts in summary.get("changes", {}).items():
            changes.setdefault(transform, Counter()).update(counts)
        changed.update(summary.get("changed", {}))
    return TransformReport(
        corpus=name, parent=parent, transforms=chain_record(list(chain)),
        config_hash=config_hash, shards=len(files), shards_done=done, shards_reused=reused,
        shards_dropped=0, documents_read=stats["read"], documents=stats["documents"],
        dropped=stats["rejected"], dropped_by_reason=reasons,
        changes={t: dict(sorted(c.items())) for t, c in sorted(changes.items())},
        changed_documents=dict(sorted(changed.items())), statistics=fitted,
    )  # fmt: skip


def transform_examples(
    workspace: Workspace | str | os.PathLike[str],
    corpus: str,
    n: int = 5,
    *,
    seed: int = 0,
    max_chars: int = 600,
) -> dict[str, Any]:
    """A derived corpus's record, `n` changed documents before and after with their change
    records, and `n` dropped documents with their reason (for `inspect`)."""
    ws = as_workspace(workspace)
    with ws.catalog(read_only=True) as con:
        catalog.require_corpus(con, corpus)
        record = catalog.transform_record(con, corpus)
        if record is None:
            raise InputError(f"corpus {corpus!r} was ingested, not made by a transform")
        derived = ws.shard_files(con, corpus)
        parent = ws.shard_files(con, record["parent"])
        rejects = [
            ws.absolute(p)
            for (p,) in con.execute(
                "select rejects_path from chunks where corpus = ? and rejects_path is not null "
                "order by rejects_path",
                [corpus],
            ).fetchall()
        ]
    record = {**record, "transforms": json.loads(record["transforms"]),
              "summary": json.loads(record["summary"] or "{}")}  # fmt: skip
    result: dict[str, Any] = {"corpus": record, "changed": [], "dropped": []}
    with duckdb.connect() as con:
        if derived and parent:
            result["changed"] = catalog.rows(
                con,
                "select d.doc_id, d.domain, left(p.text, ?) as before, left(d.text, ?) as after, "
                "d.changes from "
                f"read_parquet({sql_files(derived)}) d join read_parquet({sql_files(parent)}) p "
                "using (doc_id) where d.changes <> '{}' order by hash(d.doc_id, ?) limit ?",
                [max_chars, max_chars, seed, n],
            )
        if rejects:
            result["dropped"] = catalog.rows(
                con,
                "select source, line, reason, detail, "
                "left(json_extract_string(decode(raw), '$.text'), ?) as before "
                f"from read_parquet({sql_files(rejects)}) order by hash(source, line, ?) limit ?",
                [max_chars, seed, n],
            )
    for row in result["changed"]:
        row["changes"] = json.loads(row["changes"])
    return result


def lineage(workspace: Workspace | str | os.PathLike[str], corpus: str) -> list[dict[str, Any]]:
    """The transform records from `corpus` back to the ingested corpus it derives from
    (empty for an ingested corpus), each with its transforms decoded."""
    ws = as_workspace(workspace)
    chain: list[dict[str, Any]] = []
    with ws.catalog(read_only=True) as con:
        catalog.require_corpus(con, corpus)
        seen = {corpus}
        record = catalog.transform_record(con, corpus)
        while record is not None:
            chain.append({**record, "transforms": json.loads(record["transforms"])})
            if record["parent"] in seen:  # a cycle cannot be made, but never loop on one
                break
            seen.add(record["parent"])
            record = catalog.transform_record(con, record["parent"])
    return chain


__all__ = [
    "TransformReport",
    "TransformSpec",
    "TransformUnit",
    "lineage",
    "rewrite",
    "transform",
    "transform_examples",
    "transform_shard",
    "transform_unit",
]
