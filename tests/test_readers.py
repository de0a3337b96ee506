"""Library-level tests of the streaming readers: every input format and every ingest option.

Each test plans chunks with `plan_chunks` and runs `ingest_chunk` on every chunk directly
(no Prefect, no CLI), then reads back the shard and reject files it wrote.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import good_text, write_jsonl
from ingest_helpers import CORPUS, Ingested, ingest

from gristmill.errors import InputError
from gristmill.storage.ingest import doc_id, ingest_chunk
from gristmill.storage.readers import IngestOptions, plan_chunks
from gristmill.storage.workspace import Workspace


def records(n: int, start: int = 0) -> list[dict]:
    return [{"text": good_text(i), "n": i} for i in range(start, start + n)]


# -- JSONL, plain and compressed -----------------------------------------------------------------
def test_jsonl_plain(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in" / "plain.jsonl", records(5))
    out = ingest(tmp_path / "ws", [path])
    assert len(out.results) == 1
    assert out.texts() == [good_text(i) for i in range(5)]
    assert out.lines() == [1, 2, 3, 4, 5]
    rows = out.rows()
    assert {r["source"] for r in rows} == {"plain.jsonl"}
    assert [json.loads(r["meta"]) for r in rows] == [{"n": i} for i in range(5)]
    assert [r["doc_id"] for r in rows] == [
        doc_id(CORPUS, "plain.jsonl", f"line:{n}") for n in range(1, 6)
    ]
    assert out.rejects.num_rows == 0


def test_jsonl_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    lines = [json.dumps(r) for r in records(3)]
    path.write_text(f"\n{lines[0]}\n\n   \n{lines[1]}\r\n\r\n{lines[2]}", encoding="utf-8")
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == [good_text(i) for i in range(3)]
    assert out.lines() == [2, 5, 7]
    assert out.results[0].records_read == 3
    assert out.rejects.num_rows == 0


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_jsonl_compressed(tmp_path: Path, suffix: str) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records(50)).encode()
    if suffix.endswith(".gz"):
        packed = gzip.compress(data)
    else:
        packed = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"packed{suffix}"
    path.write_bytes(packed)
    # A compressed file is never split, however small the chunks.
    out = ingest(tmp_path / "ws", [path], IngestOptions(chunk_bytes=256))
    assert len(out.results) == 1
    assert out.texts() == [good_text(i) for i in range(50)]
    assert out.lines() == list(range(1, 51))
    assert {r["source"] for r in out.rows()} == {path.name}
    assert out.rejects.num_rows == 0


def test_multi_member_gzip(tmp_path: Path) -> None:
    first = "".join(json.dumps(r) + "\n" for r in records(3)).encode()
    second = "".join(json.dumps(r) + "\n" for r in records(2, start=3)).encode()
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(gzip.compress(first) + gzip.compress(second))
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == [good_text(i) for i in range(5)]
    assert out.lines() == [1, 2, 3, 4, 5]
    assert out.rejects.num_rows == 0


def test_large_jsonl_split_into_chunks_matches_single_chunk(tmp_path: Path) -> None:
    lines = [json.dumps({"text": good_text(i), "n": i}) for i in range(400)]
    lines[57] = ""  # blank lines and a bad line, to keep line numbering honest across chunks
    lines[58] = "   "
    lines[123] = '{"text": "cut off'
    lines[301] = ""
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size > 20 * 4096

    whole = ingest(tmp_path / "ws1", [path])
    split = ingest(tmp_path / "ws2", [path], IngestOptions(chunk_bytes=4096))
    assert len(whole.results) == 1
    assert len(split.results) >= 20
    assert len({r.chunk_key for r in split.results}) == len(split.results)

    assert whole.docs.num_rows == 396
    assert split.docs.num_rows == whole.docs.num_rows
    assert whole.rows() == split.rows()  # same ids, lines, texts, meta; no duplicates or gaps
    expected_lines = [n + 1 for n in range(400) if n not in (57, 58, 123, 301)]
    assert split.lines() == expected_lines
    for row in split.rows():
        assert row["text"] == good_text(row["source_line"] - 1)
        assert row["doc_id"] == doc_id(CORPUS, "big.jsonl", f"line:{row['source_line']}")
    assert [(r["line"], r["reason"]) for r in split.reject_rows()] == [(124, "malformed_json")]
    assert split.reject_rows() == whole.reject_rows()
    assert sum(r.records_read for r in split.results) == 397


def test_json_extension_is_read_as_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", records(2))
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == [good_text(0), good_text(1)]


# -- Parquet -------------------------------------------------------------------------------------
def test_parquet_row_groups_split_into_chunks(tmp_path: Path) -> None:
    n = 200
    table = pa.table(
        {
            "text": [good_text(i) for i in range(n)],
            "n": list(range(n)),
            "tag": [f"t{i % 3}" for i in range(n)],
        }
    )
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=30)
    assert pq.ParquetFile(path).metadata.num_row_groups == 7

    whole = ingest(tmp_path / "ws1", [path])
    split = ingest(tmp_path / "ws2", [path], IngestOptions(chunk_bytes=1))
    assert len(whole.results) == 1
    assert len(split.results) == 7
    assert whole.docs.num_rows == split.docs.num_rows == n
    assert whole.rows() == split.rows()
    assert split.lines() == list(range(1, n + 1))
    rows = split.rows()
    assert [r["text"] for r in rows] == [good_text(i) for i in range(n)]
    assert json.loads(rows[10]["meta"]) == {"n": 10, "tag": "t1"}
    assert rows[42]["doc_id"] == doc_id(CORPUS, "rows.parquet", "line:43")


def test_parquet_nested_and_non_string_text(tmp_path: Path) -> None:
    table = pa.table(
        {
            "doc": [{"body": good_text(0), "lang": "en"}, {"body": None, "lang": "fr"}],
            "site": ["a.example", "b.example"],
        }
    )
    path = tmp_path / "nested.parquet"
    pq.write_table(table, path)
    out = ingest(tmp_path / "ws", [path], IngestOptions(text_field="doc.body", domain_field="site"))
    assert out.texts() == [good_text(0)]
    assert out.rows()[0]["domain"] == "a.example"
    assert [(r["line"], r["reason"]) for r in out.reject_rows()] == [(2, "missing_text")]

    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    out = ingest(tmp_path / "ws2", [numbers])
    assert out.docs.num_rows == 0
    assert [r["reason"] for r in out.reject_rows()] == ["non_string_text"] * 2


# -- CSV / TSV -----------------------------------------------------------------------------------
def test_csv_with_header_and_multiline_quoted_field(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text(
        'text,label\n"Hello, world\nsecond line",1\nplain row here,0\n"say ""hi"" now",1\n',
        encoding="utf-8",
    )
    out = ingest(tmp_path / "ws", [path])
    rows = out.rows()
    assert [r["text"] for r in rows] == [
        "Hello, world\nsecond line",
        "plain row here",
        'say "hi" now',
    ]
    assert [r["source_line"] for r in rows] == [2, 4, 5]
    assert [json.loads(r["meta"]) for r in rows] == [{"label": "1"}, {"label": "0"}, {"label": "1"}]
    assert out.results[0].records_read == 3
    assert out.rejects.num_rows == 0


def test_csv_text_field_other_column(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "summaries", "source"])
        for i in range(3):
            writer.writerow([i, good_text(i), f"src{i}"])
    out = ingest(
        tmp_path / "ws", [path], IngestOptions(text_field="summaries", domain_field="source")
    )
    assert out.texts() == [good_text(i) for i in range(3)]
    assert [r["domain"] for r in out.rows()] == ["src0", "src1", "src2"]
    assert json.loads(out.rows()[0]["meta"]) == {"id": "0", "source": "src0"}


def test_tsv_without_header(tmp_path: Path) -> None:
    path = tmp_path / "labelled.tsv"
    path.write_text("first sentence here\t0\nsecond sentence\t1\n", encoding="utf-8")
    out = ingest(tmp_path / "ws", [path], IngestOptions(csv_header=False, text_field="0"))
    rows = out.rows()
    assert [r["text"] for r in rows] == ["first sentence here", "second sentence"]
    assert [r["source_line"] for r in rows] == [1, 2]
    assert [json.loads(r["meta"]) for r in rows] == [{"1": "0"}, {"1": "1"}]


def test_tsv_keeps_double_quotes_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "quotes.tsv"
    path.write_text(
        'text\tlabel\nHe said "hello" to me\t1\n"Quoted start" and more\t0\nan "open quote\t1\n',
        encoding="utf-8",
    )
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == ['He said "hello" to me', '"Quoted start" and more', 'an "open quote']
    assert out.lines() == [2, 3, 4]
    assert out.rejects.num_rows == 0


def test_csv_blank_line_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("text,label\nhello world,1\n\nsecond row,0\n", encoding="utf-8")
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == ["hello world", "second row"]
    assert out.lines() == [2, 4]
    assert out.rejects.num_rows == 0


def test_csv_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhello world,1\n")
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == ["hello world"]
    assert out.rejects.num_rows == 0


def test_txt_extension_with_format_tsv(tmp_path: Path) -> None:
    path = tmp_path / "sentences.txt"
    path.write_text('A "quoted" film.  \t0\nGreat acting\t1\n', encoding="utf-8")
    options = IngestOptions(format="tsv", csv_header=False, text_field="0")
    out = ingest(tmp_path / "ws", [path], options)
    assert out.texts() == ['A "quoted" film.  ', "Great acting"]
    assert [json.loads(r["meta"]) for r in out.rows()] == [{"1": "0"}, {"1": "1"}]


# -- plain text ----------------------------------------------------------------------------------
def test_txt_file_mode_one_document_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("First book.\nSecond line.\n", encoding="utf-8")
    (folder / "b.md").write_text("# Title\n\nBody text.", encoding="utf-8")
    (folder / ".hidden.txt").write_text("never read", encoding="utf-8")
    out = ingest(tmp_path / "ws", [folder])
    rows = out.rows()
    assert [(r["source"], r["source_line"]) for r in rows] == [
        ("books/a.txt", 1),
        ("books/b.md", 1),
    ]
    assert [r["text"] for r in rows] == ["First book.\nSecond line.\n", "# Title\n\nBody text."]
    assert [r["meta"] for r in rows] == ["{}", "{}"]
    assert rows[0]["doc_id"] == doc_id(CORPUS, "books/a.txt", "line:1")


def test_txt_line_mode(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("alpha one\n\nbeta two\n   \ngamma three", encoding="utf-8")
    out = ingest(tmp_path / "ws", [path], IngestOptions(txt_unit="line"))
    assert out.texts() == ["alpha one", "beta two", "gamma three"]
    assert out.lines() == [1, 3, 5]


def test_txt_line_mode_split_into_chunks(tmp_path: Path) -> None:
    path = tmp_path / "many.txt"
    path.write_text("".join(f"line number {i} of the file\n" for i in range(1, 2001)))
    whole = ingest(tmp_path / "ws1", [path], IngestOptions(txt_unit="line"))
    split = ingest(tmp_path / "ws2", [path], IngestOptions(txt_unit="line", chunk_bytes=2048))
    assert len(split.results) > 10
    assert whole.rows() == split.rows()
    assert split.lines() == list(range(1, 2001))
    assert all(r["text"] == f"line number {r['source_line']} of the file" for r in split.rows())


def test_txt_line_mode_crlf(tmp_path: Path) -> None:
    path = tmp_path / "dos.txt"
    path.write_bytes(b"first line\r\nsecond line\r\nthird line\r\n")
    out = ingest(tmp_path / "ws", [path], IngestOptions(txt_unit="line"))
    assert out.texts() == ["first line", "second line", "third line"]


def test_txt_paragraph_mode(tmp_path: Path) -> None:
    path = tmp_path / "paras.txt"
    path.write_text("p1 l1\np1 l2\n\np2\n\n\n\np3 l1\np3 l2\n\np4\n", encoding="utf-8")
    out = ingest(tmp_path / "ws", [path], IngestOptions(txt_unit="paragraph"))
    assert out.texts() == ["p1 l1\np1 l2", "p2", "p3 l1\np3 l2", "p4"]
    assert out.lines() == [1, 4, 8, 11]


def test_txt_paragraph_mode_last_paragraph_line(tmp_path: Path) -> None:
    path = tmp_path / "paras.txt"
    path.write_text("p1 l1\np1 l2\n\np2\n\n\np3\n", encoding="utf-8")
    out = ingest(tmp_path / "ws", [path], IngestOptions(txt_unit="paragraph"))
    assert out.texts() == ["p1 l1\np1 l2", "p2", "p3"]
    assert out.lines() == [1, 4, 7]


def test_txt_separator(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_text(
        "story one<|endoftext|>\nstory two\nmore<|endoftext|>\n\nstory three<|endoftext|>\n",
        encoding="utf-8",
    )
    out = ingest(tmp_path / "ws", [path], IngestOptions(separator="<|endoftext|>"))
    assert out.texts() == ["story one", "story two\nmore", "story three"]
    assert out.lines() == [1, 2, 5]
    assert out.rejects.num_rows == 0


def test_txt_separator_documents_on_one_line_get_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "inline.txt"
    path.write_text("story one<|endoftext|>story two<|endoftext|>story three", encoding="utf-8")
    options = IngestOptions(separator="<|endoftext|>")
    chunks = plan_chunks([str(path)], options)
    result = ingest_chunk(str(tmp_path / "ws"), CORPUS, chunks[0], options)
    assert result.documents == 3
    docs = pq.read_table(Workspace(tmp_path / "ws").absolute(result.shards[0].path))
    assert sorted(docs["text"].to_pylist()) == ["story one", "story three", "story two"]
    assert len(set(docs["doc_id"].to_pylist())) == 3


def test_txt_separator_last_segment_line(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_text("story one<|endoftext|>\nstory two\nmore<|endoftext|>\nstory three")
    out = ingest(tmp_path / "ws", [path], IngestOptions(separator="<|endoftext|>"))
    assert out.texts() == ["story one", "story two\nmore", "story three"]
    assert out.lines() == [1, 2, 4]


def test_txt_separator_spanning_read_pieces(tmp_path: Path) -> None:
    # Documents larger than the 1 MiB read size put separators across piece boundaries.
    story = ("word " * 60_000).strip()
    path = tmp_path / "long.txt"
    text = "".join(f"{i}\n{story}<|endoftext|>\n" for i in range(5))
    path.write_text(text, encoding="utf-8")
    out = ingest(tmp_path / "ws", [path], IngestOptions(separator="<|endoftext|>"))
    assert out.texts() == [f"{i}\n{story}" for i in range(5)]
    assert out.lines() == [1, 3, 5, 7, 9]


# -- Hugging Face datasets -----------------------------------------------------------------------
def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "hfdata"
    data = {"text": [good_text(i) for i in range(4)], "label": [0, 1, 0, 1]}
    datasets.Dataset.from_dict(data).save_to_disk(str(folder))
    out = ingest(tmp_path / "ws", [folder])
    assert out.texts() == [good_text(i) for i in range(4)]
    assert {r["source"] for r in out.rows()} == {"hfdata"}
    assert out.lines() == [1, 2, 3, 4]
    assert json.loads(out.rows()[1]["meta"]) == {"label": 1}


def test_hf_dataset_dict_two_splits(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "hfdict"
    train = datasets.Dataset.from_dict(
        {"text": [good_text(i) for i in range(3)], "label": [0, 1, 0]}
    )
    test = datasets.Dataset.from_dict({"text": [good_text(10), ""], "label": [1, 1]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder))

    out = ingest(tmp_path / "ws", [folder])
    assert sorted(r.source for r in out.results) == ["hfdict/test", "hfdict/train"]
    rows = out.rows()
    assert [(r["source"], r["source_line"]) for r in rows] == [
        ("hfdict/test", 1),
        ("hfdict/train", 1),
        ("hfdict/train", 2),
        ("hfdict/train", 3),
    ]
    assert rows[0]["text"] == good_text(10)
    assert rows[0]["doc_id"] == doc_id(CORPUS, "hfdict/test", "line:1")
    assert json.loads(rows[2]["meta"]) == {"label": 1}
    assert [(r["source"], r["line"], r["reason"]) for r in out.reject_rows()] == [
        ("hfdict/test", 2, "empty_text")
    ]

    only = ingest(tmp_path / "ws2", [folder], IngestOptions(hf_split="train"))
    assert [r.source for r in only.results] == ["hfdict/train"]
    assert only.docs.num_rows == 3

    with pytest.raises(InputError, match="validation"):
        plan_chunks([str(folder)], IngestOptions(hf_split="validation"))


# -- options -------------------------------------------------------------------------------------
# Every options test runs twice: once where Arrow's JSON reader parses the whole block, and once
# where a malformed line forces the line-by-line fallback. Both paths must agree.
PARSE_PATHS = pytest.mark.parametrize("fallback", [False, True], ids=["arrow", "lines"])


def write_records(path: Path, rows: list[dict], fallback: bool) -> Path:
    write_jsonl(path, rows)
    if fallback:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("{not json\n")
    return path


@PARSE_PATHS
def test_text_field(tmp_path: Path, fallback: bool) -> None:
    rows = [{"body": good_text(i), "text": "not this one", "k": i} for i in range(3)]
    path = write_records(tmp_path / "body.jsonl", rows, fallback)
    out = ingest(tmp_path / "ws", [path], IngestOptions(text_field="body"))
    assert out.texts() == [good_text(i) for i in range(3)]
    assert [json.loads(r["meta"]) for r in out.rows()] == [
        {"text": "not this one", "k": i} for i in range(3)
    ]
    assert out.rejects.num_rows == (1 if fallback else 0)


@PARSE_PATHS
def test_nested_domain_field(tmp_path: Path, fallback: bool) -> None:
    rows = [
        {"contents": good_text(0), "metadata": {"pile_set_name": "Pile-CC"}},
        {"contents": good_text(1), "metadata": {"pile_set_name": "Github"}},
        {"contents": good_text(2), "metadata": {"other": "x"}},
    ]
    path = write_records(tmp_path / "pile.jsonl", rows, fallback)
    options = IngestOptions(text_field="contents", domain_field="metadata.pile_set_name")
    out = ingest(tmp_path / "ws", [path], options)
    assert [r["domain"] for r in out.rows()] == ["Pile-CC", "Github", CORPUS]
    meta = json.loads(out.rows()[0]["meta"])
    assert "contents" not in meta
    assert meta["metadata"]["pile_set_name"] == "Pile-CC"


@PARSE_PATHS
def test_url_field_host_is_domain(tmp_path: Path, fallback: bool) -> None:
    rows = [
        {"text": good_text(0), "url": "https://News.Example.COM:8443/a/b?c=d"},
        {"text": good_text(1), "url": "http://blog.example.org"},
        {"text": good_text(2), "url": "not a url"},
        {"text": good_text(3)},
    ]
    path = write_records(tmp_path / "web.jsonl", rows, fallback)
    out = ingest(tmp_path / "ws", [path], IngestOptions(url_field="url", domain="unknown"))
    assert [r["domain"] for r in out.rows()] == [
        "news.example.com",
        "blog.example.org",
        "unknown",
        "unknown",
    ]


@PARSE_PATHS
def test_constant_and_default_domain(tmp_path: Path, fallback: bool) -> None:
    rows = [{"text": good_text(i), "site": "s1" if i else None} for i in range(3)]
    path = write_records(tmp_path / "dom.jsonl", rows, fallback)

    default = ingest(tmp_path / "ws1", [path], corpus="my-corpus")
    assert {r["domain"] for r in default.rows()} == {"my-corpus"}

    constant = ingest(tmp_path / "ws2", [path], IngestOptions(domain="web"))
    assert {r["domain"] for r in constant.rows()} == {"web"}

    # With a domain field, the constant fills in for records that lack one.
    both = ingest(tmp_path / "ws3", [path], IngestOptions(domain="web", domain_field="site"))
    assert [r["domain"] for r in both.rows()] == ["web", "s1", "s1"]


@PARSE_PATHS
def test_id_field_ids_independent_of_line_order(tmp_path: Path, fallback: bool) -> None:
    rows = [{"id": f"doc-{i}", "text": good_text(i)} for i in range(30)]
    first = write_records(tmp_path / "a" / "data.jsonl", rows, fallback)
    shuffled_rows = rows[:]
    random.Random(7).shuffle(shuffled_rows)
    second = write_records(tmp_path / "b" / "data.jsonl", shuffled_rows, fallback)

    one = ingest(tmp_path / "ws1", [first], IngestOptions(id_field="id", chunk_bytes=1024))
    two = ingest(tmp_path / "ws2", [second], IngestOptions(id_field="id", chunk_bytes=1024))
    assert len(one.results) == len(two.results) == 1  # id_field files are never split

    def by_id(out: Ingested) -> dict[str, int]:
        return {json.loads(r["meta"])["id"]: r["doc_id"] for r in out.rows()}

    assert len(by_id(one)) == 30
    assert by_id(one) == by_id(two)
    for key, value in by_id(one).items():
        assert value == doc_id(CORPUS, "data.jsonl", f"id:{key}")
    # the line numbers still say where each record was
    for row in two.rows():
        assert shuffled_rows[row["source_line"] - 1]["text"] == row["text"]


@PARSE_PATHS
def test_integer_id_field(tmp_path: Path, fallback: bool) -> None:
    rows = [{"id": 100 + i, "text": good_text(i)} for i in range(3)]
    path = write_records(tmp_path / "ints.jsonl", rows, fallback)
    out = ingest(tmp_path / "ws", [path], IngestOptions(id_field="id"))
    assert [r["doc_id"] for r in out.rows()] == [
        doc_id(CORPUS, "ints.jsonl", f"id:{100 + i}") for i in range(3)
    ]


@PARSE_PATHS
def test_meta_holds_other_fields(tmp_path: Path, fallback: bool) -> None:
    rows = [
        {
            "title": f"T{i}",
            "text": good_text(i),
            "score": i + 0.5,
            "tags": ["a", "b"],
            "info": {"lang": "en", "pages": i},
            "flag": True,
            "name": "Zoë ✓",
        }
        for i in range(2)
    ]
    path = write_records(tmp_path / "meta.jsonl", rows, fallback)
    out = ingest(tmp_path / "ws", [path])
    for i, row in enumerate(out.rows()):
        meta = json.loads(row["meta"])
        assert "text" not in meta
        assert meta == {k: v for k, v in rows[i].items() if k != "text"}


def test_meta_same_on_both_parse_paths(tmp_path: Path) -> None:
    rows = [{"text": good_text(0), "score": 1}, {"text": good_text(1)}]
    clean = write_records(tmp_path / "a" / "m.jsonl", rows, fallback=False)
    broken = write_records(tmp_path / "b" / "m.jsonl", rows, fallback=True)
    one = ingest(tmp_path / "ws1", [clean])
    two = ingest(tmp_path / "ws2", [broken])
    assert [r["meta"] for r in two.rows()] == ['{"score":1}', "{}"]
    assert [r["meta"] for r in one.rows()] == [r["meta"] for r in two.rows()]


def test_options_hash_ignores_shard_size_only() -> None:
    # A different chunk size plans different chunks, so it must not pass for the same options.
    base = IngestOptions()
    assert base.options_hash() == IngestOptions(shard_bytes=10).options_hash()
    assert base.options_hash() != IngestOptions(chunk_bytes=10).options_hash()
    assert base.options_hash() != IngestOptions(text_field="body").options_hash()
    assert base.options_hash() != IngestOptions(max_doc_bytes=10).options_hash()
    with pytest.raises(ValueError):
        IngestOptions(unknown_option=1)  # type: ignore[call-arg]


# -- errors --------------------------------------------------------------------------------------
def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "absent.jsonl"
    with pytest.raises(InputError, match=r"absent\.jsonl"):
        plan_chunks([str(missing)], IngestOptions())


def test_unknown_extension_suggests_format(tmp_path: Path) -> None:
    path = tmp_path / "data.xyz"
    path.write_text("hello\n")
    with pytest.raises(InputError) as info:
        plan_chunks([str(path)], IngestOptions())
    assert "data.xyz" in str(info.value)
    assert ".xyz" in str(info.value)
    assert "--format" in str(info.value)
    # naming the format reads it anyway
    assert len(plan_chunks([str(path)], IngestOptions(format="txt"))) == 1


def test_unknown_extension_inside_directory(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_jsonl(folder / "ok.jsonl", records(1))
    (folder / "blob.bin").write_bytes(b"\x00\x01")
    with pytest.raises(InputError, match=r"blob\.bin.*--format"):
        plan_chunks([str(folder)], IngestOptions())


def test_empty_directory(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(InputError, match="empty"):
        plan_chunks([str(folder)], IngestOptions())


def test_hf_name_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(InputError, match="offline") as info:
        plan_chunks(["someone/some-dataset"], IngestOptions(format="hf"))
    assert time.monotonic() - start < 10
    assert "someone/some-dataset" in str(info.value)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(InputError, match=r"fake\.parquet"):
        plan_chunks([str(path)], IngestOptions())
