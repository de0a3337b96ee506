"""Library-level ingest tests: stable ids, bad input kept in rejects, crash safety, real data.

Everything calls `plan_chunks` and `ingest_chunk` directly (no Prefect, no CLI) and reads the
shard and reject files back with pyarrow.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import good_text, write_jsonl
from ingest_helpers import CORPUS, ingest, read_all

from gristmill.storage.ingest import (
    DOCUMENT_SCHEMA,
    REJECT_SCHEMA,
    ShardWriter,
    doc_id,
    ingest_chunk,
)
from gristmill.storage.readers import IngestOptions, plan_chunks
from gristmill.storage.workspace import Workspace


def jsonl_line(record: object) -> bytes:
    return json.dumps(record).encode()


# -- stable ids ----------------------------------------------------------------------------------
def test_reingest_into_fresh_workspace_gives_identical_ids(tmp_path: Path) -> None:
    data = tmp_path / "in"
    write_jsonl(data / "a.jsonl", [{"text": good_text(i)} for i in range(20)])
    write_jsonl(data / "sub" / "b.jsonl", [{"text": good_text(i)} for i in range(20, 30)])
    options = IngestOptions(chunk_bytes=3000)
    one = ingest(tmp_path / "ws1", [data], options)
    two = ingest(tmp_path / "ws2", [data], options)
    assert one.docs.num_rows == 30
    assert one.rows() == two.rows()
    assert [r.chunk_key for r in one.results] == [r.chunk_key for r in two.results]
    assert {r["source"] for r in one.rows()} == {"in/a.jsonl", "in/sub/b.jsonl"}
    # line-keyed ids are doc_id(corpus, source, "line:N")
    for row in one.rows():
        assert row["doc_id"] == doc_id(CORPUS, row["source"], f"line:{row['source_line']}")


def test_reingest_same_chunk_in_same_workspace_replaces_its_files(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": good_text(i)} for i in range(5)])
    options = IngestOptions()
    (chunk,) = plan_chunks([str(path)], options)
    first = ingest_chunk(str(tmp_path / "ws"), CORPUS, chunk, options)
    second = ingest_chunk(str(tmp_path / "ws"), CORPUS, chunk, options)
    assert first.chunk_key == second.chunk_key
    assert [s.path for s in first.shards] == [s.path for s in second.shards]
    assert [s.rows for s in second.shards] == [5]
    docs = read_all(Workspace(tmp_path / "ws").corpus_dir(CORPUS), DOCUMENT_SCHEMA)
    assert docs.num_rows == 5


def test_different_corpus_names_give_different_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": good_text(i)} for i in range(10)])
    one = ingest(tmp_path / "ws", [path], corpus="alpha")
    two = ingest(tmp_path / "ws", [path], corpus="beta")
    ids_one = set(one.docs["doc_id"].to_pylist())
    ids_two = set(two.docs["doc_id"].to_pylist())
    assert len(ids_one) == len(ids_two) == 10
    assert not ids_one & ids_two
    assert {r["domain"] for r in one.rows()} == {"alpha"}
    assert {r["domain"] for r in two.rows()} == {"beta"}


def test_different_file_names_give_different_ids(tmp_path: Path) -> None:
    records = [{"text": good_text(i)} for i in range(5)]
    one = ingest(tmp_path / "ws1", [write_jsonl(tmp_path / "a.jsonl", records)])
    two = ingest(tmp_path / "ws2", [write_jsonl(tmp_path / "b.jsonl", records)])
    assert not set(one.docs["doc_id"].to_pylist()) & set(two.docs["doc_id"].to_pylist())


def test_doc_id_function() -> None:
    assert doc_id("c", "s", "line:1") == doc_id("c", "s", "line:1")
    assert doc_id("c", "s", "line:1") != doc_id("c", "s", "line:2")
    assert doc_id("c", "s", "line:1") != doc_id("c", "t", "line:1")
    assert doc_id("c", "s", "line:1") != doc_id("d", "s", "line:1")
    # the separator keeps (corpus, source) pairs apart
    assert doc_id("ab", "c", "line:1") != doc_id("a", "bc", "line:1")
    assert 0 <= doc_id("c", "s", "id:x") < 2**64


# -- bad input -----------------------------------------------------------------------------------
def test_jsonl_bad_records_are_kept_in_rejects(tmp_path: Path) -> None:
    malformed = b'{"text": "broken'
    bad_utf8 = b'{"text": "caf\xe9 au lait"}'
    missing = jsonl_line({"body": "no text field here"})
    lines = [
        jsonl_line({"text": good_text(1)}),  # 1
        malformed,  # 2
        bad_utf8,  # 3
        missing,  # 4
        jsonl_line({"text": 42}),  # 5
        jsonl_line({"text": ["a", "list"]}),  # 6
        jsonl_line({"text": ""}),  # 7
        jsonl_line({"text": "   \n\t  "}),  # 8
        jsonl_line({"text": "x" * 3000}),  # 9
        b"[1, 2, 3]",  # 10
        b'"just a string"',  # 11
        jsonl_line({"text": None}),  # 12
        jsonl_line({"text": good_text(13)}),  # 13
        b"",  # 14: blank, not a record
        jsonl_line({"text": good_text(15)}),  # 15
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = ingest(tmp_path / "ws", [path], IngestOptions(max_doc_bytes=2000))

    assert out.lines() == [1, 13, 15]
    assert out.reasons() == [
        (2, "malformed_json"),
        (3, "invalid_utf8"),
        (4, "missing_text"),
        (5, "non_string_text"),
        (6, "non_string_text"),
        (7, "empty_text"),
        (8, "empty_text"),
        (9, "oversize"),
        (10, "not_an_object"),
        (11, "not_an_object"),
        (12, "missing_text"),
    ]
    (result,) = out.results
    assert result.records_read == 14
    assert result.rejected == 11
    assert result.reject_counts == {
        "malformed_json": 1,
        "invalid_utf8": 1,
        "missing_text": 2,
        "non_string_text": 2,
        "empty_text": 2,
        "oversize": 1,
        "not_an_object": 2,
    }
    rejects = {r["line"]: r for r in out.reject_rows()}
    assert {r["source"] for r in rejects.values()} == {"bad.jsonl"}
    assert all(r["detail"] for r in rejects.values())
    # unparseable lines keep their exact bytes
    assert rejects[2]["raw"] == malformed
    assert rejects[3]["raw"] == bad_utf8
    assert rejects[4]["raw"] == missing
    assert rejects[10]["raw"] == b"[1, 2, 3]"
    # records rejected after parsing keep their text and fields as JSON
    assert json.loads(rejects[7]["raw"])["text"] == ""
    assert json.loads(rejects[9]["raw"])["text"] == "x" * 3000
    assert "3000" in rejects[9]["detail"] and "2000" in rejects[9]["detail"]


def test_missing_text_on_arrow_path_keeps_fields(tmp_path: Path) -> None:
    # No malformed line: Arrow parses the block, and the reject still holds the record.
    path = write_jsonl(
        tmp_path / "fields.jsonl",
        [{"text": good_text(0), "k": 1}, {"body": "elsewhere", "k": 2}, {"text": "", "k": 3}],
    )
    out = ingest(tmp_path / "ws", [path])
    assert out.lines() == [1]
    assert out.reasons() == [(2, "missing_text"), (3, "empty_text")]
    raw = {r["line"]: r["raw"] for r in out.reject_rows()}
    assert json.loads(raw[2])["body"] == "elsewhere"
    assert json.loads(raw[3])["text"] == ""
    assert json.loads(raw[3])["meta"]["k"] == 3


def test_oversize_line_beyond_read_limit(tmp_path: Path) -> None:
    # Lines longer than max(4 * max_doc_bytes, 16 MiB) are cut out while streaming.
    huge = b'{"text": "' + b"y" * (17 << 20) + b'"}'
    path = tmp_path / "huge.jsonl"
    path.write_bytes(
        jsonl_line({"text": good_text(1)})
        + b"\n"
        + huge
        + b"\n"
        + jsonl_line({"text": good_text(3)})
        + b"\n"
    )
    out = ingest(tmp_path / "ws", [path], IngestOptions(max_doc_bytes=1000))
    assert out.lines() == [1, 3]
    assert out.reasons() == [(2, "oversize")]
    (reject,) = out.reject_rows()
    assert reject["raw"] == huge[:65536]


def test_iso_date_strings_kept_verbatim(tmp_path: Path) -> None:
    records = [
        {
            "text": good_text(i),
            "date": "2021-03-04",
            "ts": "2021-03-04T05:06:07Z",
            "local": "2020-01-01 10:00:00",
            "info": {"created": "2019-12-31T23:59:59.123456"},
            "days": ["2020-02-29"],
        }
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "dates.jsonl", records)
    out = ingest(tmp_path / "ws", [path])
    assert out.docs.num_rows == 3
    for row, record in zip(out.rows(), records, strict=True):
        meta = json.loads(row["meta"])
        assert meta == {k: v for k, v in record.items() if k != "text"}


def test_date_valued_id_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "dated.jsonl",
        [{"id": f"2021-01-0{i + 1}", "text": good_text(i)} for i in range(3)],
    )
    out = ingest(tmp_path / "ws", [path], IngestOptions(id_field="id"))
    assert [r["doc_id"] for r in out.rows()] == [
        doc_id(CORPUS, "dated.jsonl", f"id:2021-01-0{i + 1}") for i in range(3)
    ]


def test_duplicate_and_missing_ids(tmp_path: Path) -> None:
    records = [
        {"id": "a", "text": good_text(1)},
        {"id": "b", "text": good_text(2)},
        {"id": "a", "text": good_text(3)},
        {"text": good_text(4)},
        {"id": "c", "text": ""},
        {"id": "c", "text": good_text(6)},
    ]
    path = write_jsonl(tmp_path / "ids.jsonl", records)
    out = ingest(tmp_path / "ws", [path], IngestOptions(id_field="id"))
    assert out.lines() == [1, 2, 6]
    assert out.reasons() == [(3, "duplicate_id"), (4, "missing_id"), (5, "empty_text")]
    duplicate = out.reject_rows()[0]
    assert "'a'" in duplicate["detail"]
    assert json.loads(duplicate["raw"])["text"] == good_text(3)


def test_duplicate_ids_across_parquet_row_groups(tmp_path: Path) -> None:
    table = pa.table(
        {"id": ["a", "b", "c", "a"], "text": [good_text(i) for i in range(4)]},
    )
    path = tmp_path / "ids.parquet"
    pq.write_table(table, path, row_group_size=2)
    options = IngestOptions(id_field="id", chunk_bytes=1)
    out = ingest(tmp_path / "ws", [path], options, unique_ids=False)
    assert out.docs.num_rows == 3
    assert out.reasons() == [(4, "duplicate_id")]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_jsonl(tmp_path: Path, suffix: str) -> None:
    lines = [jsonl_line({"text": good_text(i), "n": i}) for i in range(2000)]
    data = b"\n".join(lines) + b"\n"
    if suffix.endswith(".gz"):
        packed = gzip.compress(data)
    else:
        packed = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(packed[: len(packed) // 2])

    out = ingest(tmp_path / "ws", [path])
    good = out.lines()
    assert len(good) > 100  # the records before the cut are kept
    assert good == list(range(1, len(good) + 1))
    assert [r["text"] for r in out.rows()] == [good_text(i) for i in range(len(good))]
    (reject,) = out.reject_rows()
    assert reject["reason"] == "truncated"
    assert reject["line"] == len(good) + 1
    assert reject["source"] == path.name
    assert lines[len(good)].startswith(reject["raw"])  # the cut-off record's surviving bytes
    assert out.records_read() == len(good) + 1


def test_corrupt_gzip(tmp_path: Path) -> None:
    packed = bytearray(
        gzip.compress(b"".join(jsonl_line({"text": good_text(i)}) + b"\n" for i in range(200)))
    )
    packed[len(packed) // 2 :] = bytes(len(packed) - len(packed) // 2)  # zero the second half
    path = tmp_path / "zeroed.jsonl.gz"
    path.write_bytes(bytes(packed))
    out = ingest(tmp_path / "ws", [path])
    assert out.lines() == list(range(1, out.docs.num_rows + 1))
    assert [r["reason"] for r in out.reject_rows()] == ["truncated"]
    assert out.reject_rows()[0]["line"] == out.docs.num_rows + 1


def test_truncated_gzip_csv_and_txt(tmp_path: Path) -> None:
    rows = "".join(f'{i},"{good_text(i)}"\n' for i in range(300))
    csv_data = ("n,text\n" + rows).encode()
    packed = gzip.compress(csv_data)
    csv_path = tmp_path / "cut.csv.gz"
    csv_path.write_bytes(packed[: len(packed) // 2])
    out = ingest(tmp_path / "ws1", [csv_path])
    good = out.lines()
    assert len(good) > 10
    assert good == list(range(2, len(good) + 2))
    assert out.reasons() == [(len(good) + 2, "truncated")]

    txt = "".join(f"line {i} of the text file\n" for i in range(1, 3001)).encode()
    packed = gzip.compress(txt)
    txt_path = tmp_path / "cut.txt.gz"
    txt_path.write_bytes(packed[: len(packed) // 2])
    out = ingest(tmp_path / "ws2", [txt_path], IngestOptions(txt_unit="line"))
    good = out.lines()
    assert len(good) > 10
    assert good == list(range(1, len(good) + 1))
    assert out.reasons() == [(len(good) + 1, "truncated")]

    out = ingest(tmp_path / "ws3", [txt_path])  # file mode: the one document is truncated
    assert out.docs.num_rows == 0
    assert out.reasons() == [(1, "truncated")]


def test_csv_bad_rows_and_invalid_utf8(tmp_path: Path) -> None:
    bad_bytes = b"caf\xe9 au lait,1"
    path = tmp_path / "rows.csv"
    path.write_bytes(
        b"text,label\n"
        b"good row one,1\n"  # 2
        b"too,many,fields\n"  # 3
        b"lonely\n"  # 4
        + bad_bytes  # 5
        + b"\n"
        b"good row six,0\n"  # 6
        b",1\n"  # 7: empty text
    )
    out = ingest(tmp_path / "ws", [path])
    assert [r["text"] for r in out.rows()] == ["good row one", "good row six"]
    assert out.lines() == [2, 6]
    assert out.reasons() == [
        (3, "bad_row"),
        (4, "bad_row"),
        (5, "invalid_utf8"),
        (7, "empty_text"),
    ]
    rejects = {r["line"]: r for r in out.reject_rows()}
    assert rejects[3]["raw"] == b"too,many,fields"
    assert "3 fields" in rejects[3]["detail"]
    assert rejects[5]["raw"] == bad_bytes
    assert out.records_read() == 6


def test_txt_file_mode_invalid_utf8(tmp_path: Path) -> None:
    content = b"Some text with a bad byte \xff here.\n"
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    out = ingest(tmp_path / "ws", [path])
    assert out.docs.num_rows == 0
    (reject,) = out.reject_rows()
    assert (reject["source"], reject["line"], reject["reason"]) == ("bad.txt", 1, "invalid_utf8")
    assert reject["raw"] == content


def test_txt_line_mode_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"fine first line\nbad \xfe line\nfine third line\n")
    out = ingest(tmp_path / "ws", [path], IngestOptions(txt_unit="line"))
    assert out.lines() == [1, 3]
    assert out.reasons() == [(2, "invalid_utf8")]
    assert out.reject_rows()[0]["raw"] == b"bad \xfe line"


@pytest.mark.parametrize("compressed", [False, True], ids=["txt", "txt.gz"])
def test_oversize_plain_text_file(tmp_path: Path, compressed: bool) -> None:
    content = ("A long book. " * 400).encode()
    small = tmp_path / "small.txt"
    small.write_text("A short note.", encoding="utf-8")
    path = tmp_path / ("big.txt.gz" if compressed else "big.txt")
    path.write_bytes(gzip.compress(content) if compressed else content)
    out = ingest(tmp_path / "ws", [small, path], IngestOptions(max_doc_bytes=1000))
    assert [r["text"] for r in out.rows()] == ["A short note."]
    (reject,) = out.reject_rows()
    assert (reject["source"], reject["line"], reject["reason"]) == (path.name, 1, "oversize")
    assert "1000" in reject["detail"]


def test_oversize_in_line_and_separator_modes(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text(f"short line\n{'z' * 500}\nanother short line\n", encoding="utf-8")
    out = ingest(tmp_path / "ws", [path], IngestOptions(txt_unit="line", max_doc_bytes=100))
    assert out.lines() == [1, 3]
    assert out.reasons() == [(2, "oversize")]

    sep = tmp_path / "sep.txt"
    sep.write_text(f"tiny<|endoftext|>\n{'w ' * 400}<|endoftext|>\nsmall end<|endoftext|>\n")
    out = ingest(
        tmp_path / "ws2", [sep], IngestOptions(separator="<|endoftext|>", max_doc_bytes=100)
    )
    assert [r["text"] for r in out.rows()] == ["tiny", "small end"]
    assert out.reasons() == [(2, "oversize")]


@pytest.mark.parametrize("mode", ["line", "separator"])
def test_oversize_txt_segment_spanning_read_pieces_leaves_no_fragment(
    tmp_path: Path, mode: str
) -> None:
    long = "a" * ((1 << 20) + 10)
    path = tmp_path / "long.txt"
    if mode == "line":
        path.write_text(f"first line\n{long}\nthird line\n", encoding="utf-8")
        options = IngestOptions(txt_unit="line", max_doc_bytes=1000)
        expected = ["first line", "third line"]
    else:
        path.write_text(f"first<|e|>\n{long}<|e|>\nthird<|e|>\n", encoding="utf-8")
        options = IngestOptions(separator="<|e|>", max_doc_bytes=1000)
        expected = ["first", "third"]
    out = ingest(tmp_path / "ws", [path], options)
    assert [r["text"] for r in out.rows()] == expected
    assert out.lines() == [1, 3]
    assert out.reasons() == [(2, "oversize")]
    assert out.records_read() == 3


@pytest.mark.parametrize("field", ["domain_field", "id_field"])
def test_object_valued_domain_or_id_field(tmp_path: Path, field: str) -> None:
    records = [{"text": good_text(i), "site": {"name": f"s{i}"}} for i in range(2)]
    clean = write_jsonl(tmp_path / "a" / "obj.jsonl", records)
    broken = write_jsonl(tmp_path / "b" / "obj.jsonl", records)
    with open(broken, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    options = IngestOptions(**{field: "site"})
    fallback = ingest(tmp_path / "ws2", [broken], options)  # works
    arrow = ingest(tmp_path / "ws1", [clean], options)  # raises
    for out in (fallback, arrow):
        assert out.docs.num_rows == 2
        if field == "domain_field":
            domains = [json.loads(r["domain"]) for r in out.rows()]
            assert domains == [{"name": "s0"}, {"name": "s1"}]


# -- crash safety --------------------------------------------------------------------------------
def test_leftover_partial_files_are_removed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": good_text(i)} for i in range(6)])
    options = IngestOptions()
    (chunk,) = plan_chunks([str(path)], options)
    key = chunk.key(CORPUS, options.options_hash())
    ws = Workspace(tmp_path / "ws")
    corpus_dir, rejects_dir = ws.corpus_dir(CORPUS), ws.rejects_dir(CORPUS)
    corpus_dir.mkdir(parents=True)
    rejects_dir.mkdir(parents=True)

    # What a killed run could leave: finished shards (a full copy of the documents), a shard
    # being written, and a rejects file, all named after this chunk's key.
    clean = ingest(tmp_path / "clean", [path], options)
    pq.write_table(clean.docs, corpus_dir / f"{key}-00000.parquet")
    pq.write_table(clean.docs, corpus_dir / f"{key}-00001.parquet")
    (corpus_dir / f".{key}-00002.parquet.tmp-123").write_bytes(b"partial")
    pq.write_table(REJECT_SCHEMA.empty_table(), rejects_dir / f"{key}.parquet")
    (rejects_dir / f".{key}.parquet.tmp-123").write_bytes(b"partial")
    # Files of another chunk are not touched.
    other = "0123456789abcdef"
    assert other != key
    pq.write_table(clean.docs.slice(0, 1), corpus_dir / f"{other}-00000.parquet")

    result = ingest_chunk(str(ws.root), CORPUS, chunk, options)
    assert result.documents == 6
    assert result.rejects_path is None
    assert sorted(p.name for p in corpus_dir.iterdir()) == sorted(
        [f"{key}-00000.parquet", f"{other}-00000.parquet"]
    )
    assert list(rejects_dir.iterdir()) == []
    mine = pq.read_table(corpus_dir / f"{key}-00000.parquet")
    assert mine.num_rows == 6
    assert sorted(mine["doc_id"].to_pylist()) == sorted(clean.docs["doc_id"].to_pylist())
    assert [s.path for s in result.shards] == [f"corpora/{CORPUS}/{key}-00000.parquet"]


def test_shard_writer_rolls_and_renames(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    writer = ShardWriter(ws.corpus_dir(CORPUS), "k", shard_bytes=1000, workspace=ws)

    def batch(start: int, n: int) -> pa.Table:
        texts = [good_text(i) for i in range(start, start + n)]
        return pa.table(
            [
                pa.array(range(start, start + n), pa.uint64()),
                texts,
                ["s"] * n,
                pa.array(range(start, start + n), pa.int64()),
                ["d"] * n,
                ["{}"] * n,
                pa.array([len(t.encode()) for t in texts], pa.int64()),
            ],
            schema=DOCUMENT_SCHEMA,
        )

    writer.write(DOCUMENT_SCHEMA.empty_table())
    for start in range(0, 12, 3):
        writer.write(batch(start, 3))  # ~1.7 KB of text each: every write fills a shard
    shards = writer.close()
    assert [s.path for s in shards] == [f"corpora/{CORPUS}/k-{i:05d}.parquet" for i in range(4)]
    assert [s.rows for s in shards] == [3, 3, 3, 3]
    names = sorted(p.name for p in ws.corpus_dir(CORPUS).iterdir())
    assert names == [f"k-{i:05d}.parquet" for i in range(4)]
    assert all(s.text_bytes >= 1000 and s.content_hash for s in shards)
    assert read_all(ws.corpus_dir(CORPUS), DOCUMENT_SCHEMA)["doc_id"].to_pylist() == list(range(12))


# -- real data (../shared/data) ------------------------------------------------------------------
def test_shared_pile_toy(tmp_path: Path, shared_data: Path) -> None:
    path = shared_data / "pile_toy_dsir" / "toy_pile_data.jsonl"
    options = IngestOptions(text_field="contents", domain_field="metadata.pile_set_name")
    out = ingest(tmp_path / "ws", [path], options)
    assert out.docs.num_rows == 1000
    assert out.rejects.num_rows == 0
    domains = Counter(out.docs["domain"].to_pylist())
    assert len(domains) == 14
    assert domains["Pile-CC"] == 200
    assert domains["StackExchange"] == 131
    assert domains["Enron Emails"] == 1
    meta = json.loads(out.rows()[0]["meta"])
    assert "contents" not in meta and meta["metadata"]["pile_set_name"]


def test_shared_imdb_labelled_tsv(tmp_path: Path, shared_data: Path) -> None:
    path = shared_data / "sentiment_labelled_sentences" / "imdb_labelled.txt"
    options = IngestOptions(format="tsv", csv_header=False, text_field="0")
    out = ingest(tmp_path / "ws", [path], options)
    assert out.records_read() == 1000
    assert out.docs.num_rows + out.rejects.num_rows == 1000
    assert out.docs.num_rows == 1000
    labels = Counter(json.loads(m)["1"] for m in out.docs["meta"].to_pylist())
    assert labels == {"0": 500, "1": 500}
    assert any('"' in t for t in out.docs["text"].to_pylist())


def test_shared_arxiv_csv(tmp_path: Path, shared_data: Path) -> None:
    path = shared_data / "arxiv_abstracts_sample" / "arxiv_data.csv"
    out = ingest(tmp_path / "ws", [path], IngestOptions(text_field="summaries"))
    assert out.docs.num_rows == 1000
    assert out.rejects.num_rows == 0
    texts = out.docs["text"].to_pylist()
    assert sum("\n" in t for t in texts) > 900  # hard-wrapped abstracts stay whole
    assert set(json.loads(out.rows()[0]["meta"])) == {
        "titles",
        "terms",
        "word_count",
        "unique_word_count",
    }
    assert max(out.lines()) > 1000  # source_line counts physical lines


def test_shared_tinystories_separator(tmp_path: Path, shared_data: Path) -> None:
    path = shared_data / "tinystories_2mib" / "tinystories_sample.txt"
    out = ingest(tmp_path / "ws", [path], IngestOptions(separator="<|endoftext|>"))
    assert out.docs.num_rows >= 2316
    assert out.rows()[0]["text"].startswith("One day, a little girl named Lily")
    assert all("<|endoftext|>" not in t for t in out.docs["text"].to_pylist())


def test_domain_counts_are_kept_per_corpus_version(tmp_path: Path) -> None:
    from gristmill import pipeline
    from gristmill.storage.drop import drop_corpus
    from gristmill.storage.queries import corpus_stats

    ws = Workspace(tmp_path / "ws")
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [{"text": good_text(i), "site": f"s{i % 3}"} for i in range(9)])
    pipeline.ingest(ws, [str(raw)], "web", IngestOptions(domain_field="site"))
    first = corpus_stats(ws, "web")
    (kept,) = ws.stats_dir("web").glob("domains-*.json")
    kept.write_text(json.dumps({"domains": [], "n_domains": 99}), encoding="utf-8")
    assert corpus_stats(ws, "web")["n_domains"] == 99  # read back, not scanned again
    write_jsonl(raw / "b.jsonl", [{"text": good_text(50 + i), "site": "s9"} for i in range(4)])
    pipeline.ingest(ws, [str(raw)], "web", IngestOptions(domain_field="site"))
    after = corpus_stats(ws, "web")  # a new corpus version: scanned, the old file gone
    assert not kept.exists() and len(list(ws.stats_dir("web").glob("domains-*.json"))) == 1
    assert after["n_domains"] == first["n_domains"] + 1 == 4
    assert {d["domain"]: d["documents"] for d in after["domains"]}["s9"] == 4
    drop_corpus(ws, "web")
    assert not ws.stats_dir("web").exists()
