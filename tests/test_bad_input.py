"""Bad input never aborts an ingest and never loses a readable record (issue 14, items 5-10).

Each test builds a small damaged input in tmp_path and ingests it through the library
(`plan_chunks` + `ingest_chunk`, via `ingest_helpers.ingest`, which also checks that the counts
reconcile and that every reject keeps raw bytes). Two tests run the ingest flow.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from conftest import good_text, write_jsonl
from ingest_helpers import ingest

from gristmill.errors import InputError
from gristmill.storage.ingest import ingest_chunk
from gristmill.storage.readers import RAW_CAP, IngestOptions, expand_inputs, plan_chunks
from gristmill.storage.readers import inputs as reader_inputs

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".zst": zstandard.ZstdCompressor().compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}
GARBAGE = b"this is not compressed data \x00\x01\x02\xff" * 8


def jsonl(n: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({"text": good_text(i), "n": i}).encode() + b"\n" for i in range(start, start + n)
    )


# -- 5. trailing garbage after the last compressed member ----------------------------------------
@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_trailing_garbage_keeps_every_record_and_rejects_the_garbage(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"data.jsonl{suffix}"
    path.write_bytes(COMPRESSORS[suffix](jsonl(100)) + GARBAGE)
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == [good_text(i) for i in range(100)]
    assert out.lines() == list(range(1, 101))
    (reject,) = out.reject_rows()
    assert (reject["line"], reject["reason"]) == (101, "trailing_garbage")
    assert reject["raw"] == GARBAGE
    assert str(len(GARBAGE)) in reject["detail"]
    assert out.records_read() == 101


def test_trailing_garbage_after_several_gzip_members(tmp_path: Path) -> None:
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(30)) + gzip.compress(jsonl(20, 30)) + GARBAGE)
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == [good_text(i) for i in range(50)]
    assert out.reasons() == [(51, "trailing_garbage")]


def test_large_trailing_garbage_keeps_its_first_bytes(tmp_path: Path) -> None:
    garbage = os.urandom(3 * RAW_CAP)
    path = tmp_path / "big.jsonl.zst"
    path.write_bytes(COMPRESSORS[".zst"](jsonl(10)) + garbage)
    out = ingest(tmp_path / "ws", [path])
    assert out.docs.num_rows == 10
    (reject,) = out.reject_rows()
    assert reject["reason"] == "trailing_garbage"
    assert reject["raw"] == garbage[:RAW_CAP]
    assert str(len(garbage)) in reject["detail"]


def test_corrupt_second_gzip_member_keeps_the_first(tmp_path: Path) -> None:
    second = bytearray(gzip.compress(jsonl(50, 40)))
    second[20:] = bytes(len(second) - 20)  # a valid header, then zeros
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(40)) + bytes(second))
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == [good_text(i) for i in range(40)]
    assert len(out.reject_rows()) == 1


@pytest.mark.parametrize("suffix", [".gz", ".bz2"])
def test_trailing_garbage_in_csv_and_txt(tmp_path: Path, suffix: str) -> None:
    compress = COMPRESSORS[suffix]
    rows = "".join(f'{i},"{good_text(i)}"\n' for i in range(20))
    csv_path = tmp_path / f"rows.csv{suffix}"
    csv_path.write_bytes(compress(("n,text\n" + rows).encode()) + GARBAGE)
    out = ingest(tmp_path / "ws1", [csv_path])
    assert out.texts() == [good_text(i) for i in range(20)]
    assert out.reasons() == [(22, "trailing_garbage")]
    assert out.reject_rows()[0]["raw"] == GARBAGE

    lines = "".join(f"line {i} of the text\n" for i in range(1, 31)).encode()
    txt_path = tmp_path / f"lines.txt{suffix}"
    txt_path.write_bytes(compress(lines) + GARBAGE)
    out = ingest(tmp_path / "ws2", [txt_path], IngestOptions(txt_unit="line"))
    assert out.lines() == list(range(1, 31))
    assert out.reasons() == [(31, "trailing_garbage")]

    out = ingest(tmp_path / "ws3", [txt_path])  # file mode: the document is whole
    assert out.texts() == [lines.decode()]
    assert [reason for _, reason in out.reasons()] == ["trailing_garbage"]


# -- 8. rejects keep their raw bytes -------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".zst", ".gz", ".bz2", ".xz"])
def test_file_that_is_not_compressed_is_one_reject_with_its_bytes(
    tmp_path: Path, suffix: str
) -> None:
    content = jsonl(5)
    path = tmp_path / f"plain.jsonl{suffix}"
    path.write_bytes(content)
    out = ingest(tmp_path / "ws", [path])
    assert out.docs.num_rows == 0
    (reject,) = out.reject_rows()
    assert (reject["line"], reject["reason"]) == (1, "undecodable")
    assert reject["raw"] == content


def test_csv_field_over_the_limit_is_oversize_with_its_bytes(tmp_path: Path) -> None:
    huge = "x" * (3 << 20)
    path = tmp_path / "big.csv"
    path.write_text(f'text,label\nfirst,1\n"{huge}",2\nafter,3\n', encoding="utf-8")
    out = ingest(tmp_path / "ws", [path], IngestOptions(max_doc_bytes=1_000_000))
    assert out.texts() == ["first", "after"]
    assert out.lines() == [2, 4]
    (reject,) = out.reject_rows()
    assert (reject["line"], reject["reason"]) == (3, "oversize")
    assert reject["raw"] == f'"{huge}",2\n'.encode()[:RAW_CAP]


def test_csv_multiline_field_over_the_limit_does_not_spill_into_later_rows(
    tmp_path: Path,
) -> None:
    long_line = "y" * 4000
    field = "\n".join([long_line] * 600)  # 2.4 MB over 600 lines, with a quote-looking line
    path = tmp_path / "multi.csv"
    path.write_text(
        f'text,label\nfirst,1\n"{field}\n""quoted"" line, with comma\n{field}",2\nafter,3\n'
        "last row,4\n",
        encoding="utf-8",
    )
    out = ingest(tmp_path / "ws", [path], IngestOptions(max_doc_bytes=1_000_000))
    assert out.texts() == ["first", "after", "last row"]
    after_line = 3 + 600 + 1 + 600  # the field's lines, the quoted line, the field again
    assert out.lines() == [2, after_line, after_line + 1]
    assert out.reasons() == [(3, "oversize")]
    assert out.reject_rows()[0]["raw"].startswith(b'"' + long_line.encode())


def test_csv_raw_is_the_row_as_written(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_bytes(b'text,label\n"a, quoted ""row""",1,extra\r\nok,2\n')
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == ["ok"]
    (reject,) = out.reject_rows()
    assert reject["reason"] == "bad_row"
    assert reject["raw"] == b'"a, quoted ""row""",1,extra'


def test_oversize_text_file_keeps_its_first_bytes(tmp_path: Path) -> None:
    content = os.urandom(RAW_CAP).hex().encode()  # 128 KiB of text
    path = tmp_path / "book.txt"
    path.write_bytes(content)
    out = ingest(tmp_path / "ws", [path], IngestOptions(max_doc_bytes=1000))
    (reject,) = out.reject_rows()
    assert reject["reason"] == "oversize"
    assert reject["raw"] == content[:RAW_CAP]


# -- 6. JSON too deep, lone surrogates -----------------------------------------------------------
def nested(depth: int) -> bytes:
    return b'{"text": "deep", "k": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [1_500, 100_000])
def test_json_nested_deeper_than_the_parser_allows_is_a_reject(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_bytes(jsonl(3) + nested(depth) + b"\n" + jsonl(2, 3))
    out = ingest(tmp_path / "ws", [path])
    assert out.lines() == [1, 2, 3, 5, 6]
    assert out.reasons() == [(4, "malformed_json")]
    reject = out.reject_rows()[0]
    assert "deep" in reject["detail"]
    assert reject["raw"] == nested(depth)


@pytest.mark.parametrize("depth", [70, 600])
def test_json_nested_deep_but_parseable_is_kept_with_exact_meta(tmp_path: Path, depth: int) -> None:
    # 70 is past what the Arrow path accepts, 600 past what orjson can write back.
    path = tmp_path / "deep.jsonl"
    path.write_bytes(jsonl(3) + nested(depth) + b"\n")
    out = ingest(tmp_path / "ws", [path])
    assert out.lines() == [1, 2, 3, 4]
    row = out.rows()[3]
    assert row["text"] == "deep"
    assert json.loads(row["meta"]) == {"k": json.loads("[" * depth + "]" * depth)}


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-bad-line"])
@pytest.mark.parametrize(
    "line",
    [b'{"text": "bad \\ud800 here"}', b'{"text": "fine", "k": "\\udc00"}', b'{"\\ud83d": "x"}'],
    ids=["in-text", "in-meta", "in-key"],
)
def test_lone_surrogate_escape_is_invalid_text(tmp_path: Path, line: bytes, fallback: bool) -> None:
    path = tmp_path / "surrogate.jsonl"
    path.write_bytes(jsonl(2) + line + b"\n" + (b"{broken\n" if fallback else b""))
    out = ingest(tmp_path / "ws", [path])
    assert out.lines() == [1, 2]
    assert out.reasons()[0] == (3, "invalid_text")
    assert out.reject_rows()[0]["raw"] == line


def test_surrogate_pair_escape_is_text(tmp_path: Path) -> None:
    path = tmp_path / "pair.jsonl"
    path.write_bytes(b'{"text": "smile \\ud83d\\ude00", "k": "\\ud83d\\ude00"}\n{bad\n')
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == ["smile \U0001f600"]
    assert json.loads(out.rows()[0]["meta"]) == {"k": "\U0001f600"}


# -- 7. blank and whitespace-only files and chunks -----------------------------------------------
@pytest.mark.parametrize(
    "content", [b"\n" * 1000, b"   \n\t\n \r\n" * 300, b"  "], ids=["blank", "spaces", "no-newline"]
)
def test_file_of_only_blank_lines_is_zero_documents(tmp_path: Path, content: bytes) -> None:
    for name, data in [("a.jsonl", content), ("b.jsonl.gz", gzip.compress(content))]:
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    out = ingest(tmp_path / "ws", [tmp_path / "in"], IngestOptions(chunk_bytes=512))
    assert out.docs.num_rows == 0
    assert out.rejects.num_rows == 0
    assert out.records_read() == 0


@pytest.mark.parametrize("blank", [b"\n", b"  \r\n"], ids=["empty", "whitespace"])
def test_blank_run_longer_than_a_chunk(tmp_path: Path, blank: bytes) -> None:
    path = tmp_path / "gappy.jsonl"
    path.write_bytes(jsonl(50) + blank * 20_000 + jsonl(50, 50))
    whole = ingest(tmp_path / "ws1", [path])
    split = ingest(tmp_path / "ws2", [path], IngestOptions(chunk_bytes=4096))
    assert len(split.results) > 10
    assert split.rows() == whole.rows()
    assert split.texts() == [good_text(i) for i in range(100)]
    assert split.lines() == list(range(1, 51)) + list(range(20_051, 20_101))


def test_blank_run_longer_than_a_chunk_in_line_mode_text(tmp_path: Path) -> None:
    path = tmp_path / "gappy.txt"
    path.write_bytes(b"first line\n" * 50 + b"\n" * 20_000 + b"last line\n")
    out = ingest(tmp_path / "ws", [path], IngestOptions(txt_unit="line", chunk_bytes=4096))
    assert out.lines() == [*range(1, 51), 20_051]


@pytest.mark.parametrize("content", [b"\n\n\n", b"  \n\t\n"], ids=["blank", "spaces"])
def test_csv_of_only_blank_lines_is_zero_documents(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "blank.csv"
    path.write_bytes(content)
    out = ingest(tmp_path / "ws", [path])
    assert out.records_read() == 0


def test_csv_blank_lines_before_the_header(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    path.write_bytes(b"\n  \ntext,label\nhello there,1\n\nsecond row,2\n")
    out = ingest(tmp_path / "ws", [path])
    assert out.texts() == ["hello there", "second row"]
    assert out.lines() == [4, 6]
    assert out.rejects.num_rows == 0


# -- 9. files that vanish or cannot be read mid-ingest ---------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "txt", "parquet"])
def test_input_deleted_after_planning_is_an_input_error(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"gone.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": [good_text(0)]}), path)
    elif fmt == "csv":
        path.write_text(f"text\n{good_text(0)}\n")
    elif fmt == "jsonl.gz":
        path.write_bytes(gzip.compress(jsonl(3)))
    else:
        path.write_bytes(jsonl(3))
    options = IngestOptions()
    (chunk,) = plan_chunks([str(path)], options)
    path.unlink()
    with pytest.raises(InputError, match=rf"gone\.{fmt}.*(no longer exists|not a readable)"):
        ingest_chunk(str(tmp_path / "ws"), "c", chunk, options)


def test_input_unreadable_after_planning_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "locked.jsonl", [{"text": good_text(0)}])
    options = IngestOptions()
    (chunk,) = plan_chunks([str(path)], options)

    def refuse(file: str, mode: str = "r") -> None:
        raise PermissionError(13, "Permission denied", file)

    monkeypatch.setattr(reader_inputs, "open", refuse, raising=False)
    with pytest.raises(InputError, match=r"locked\.jsonl.*permission denied"):
        ingest_chunk(str(tmp_path / "ws"), "c", chunk, options)


def test_input_that_shrank_after_planning_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "shrinks.jsonl"
    path.write_bytes(jsonl(200))
    options = IngestOptions(chunk_bytes=4096)
    chunks = plan_chunks([str(path)], options)
    path.write_bytes(jsonl(10))
    with pytest.raises(InputError, match=r"shrinks\.jsonl.*changed"):
        ingest_chunk(str(tmp_path / "ws"), "c", chunks[-1], options)


@pytest.mark.usefixtures("prefect_server")
def test_flow_fails_fast_with_input_error_for_a_deleted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gristmill.flows import tasks
    from gristmill.pipeline import ingestion, units

    path = write_jsonl(tmp_path / "vanishing.jsonl", [{"text": good_text(0)}])
    calls = []
    real_plan, real_ingest = ingestion.plan_chunks, units.ingest_chunk

    def plan_then_delete(paths: list[str], options: IngestOptions, **kwargs: object) -> list:
        chunks = real_plan(paths, options, **kwargs)
        path.unlink()
        return chunks

    def counted(*args: object) -> object:
        calls.append(args)
        return real_ingest(*args)

    monkeypatch.setattr(ingestion, "plan_chunks", plan_then_delete)
    # Past the up-front read of the first records, so the deletion is met inside the task.
    monkeypatch.setattr(ingestion, "check_first_records", lambda *args, **kwargs: None)
    monkeypatch.setattr(units, "ingest_chunk", counted)  # what the ingest task's units call
    with pytest.raises(InputError, match=r"vanishing\.jsonl"):
        tasks.ingest_flow(str(tmp_path / "ws"), [str(path)], "c")
    assert len(calls) == 1  # not retried: a missing input is not a transient I/O error


# -- 10. lossy meta is kept exactly; skipped inputs are named ------------------------------------
@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-bad-line"])
@pytest.mark.parametrize(
    ("line", "meta"),
    [
        (b'{"text": "dup", "k": 1, "k": 2}', '{"k": 1,"k": 2}'),
        (b'{"text": "first", "text": "second"}', '{"text": "first"}'),
        (b'{"text": "t", "m": {"a": 1, "a": [2]}}', '{"m": {"a": 1, "a": [2]}}'),
        (b'{"text":"t","k":1234567890123456789012345}', '{"k":1234567890123456789012345}'),
        (b'{"text": "t", "k": -99999999999999999999, "z": null}', '{"k": -99999999999999999999}'),
        (b'{"text": "t", "k": 18446744073709551615}', '{"k":18446744073709551615}'),
        (
            b'{"text": "t", "a": NaN, "b": -Infinity, "c": 1e400}',
            '{"a": NaN,"b": -Infinity,"c": 1e400}',
        ),
    ],
    ids=["dup", "dup-text", "dup-nested", "bigint", "neg-bigint", "uint64", "nan"],
)
def test_lossy_meta_is_kept_exactly(tmp_path: Path, line: bytes, meta: str, fallback: bool) -> None:
    path = tmp_path / "lossy.jsonl"
    path.write_bytes(jsonl(3) + line + b"\n" + (b"{broken\n" if fallback else b""))
    out = ingest(tmp_path / "ws", [path])
    assert out.lines() == [1, 2, 3, 4]
    row = out.rows()[3]
    assert row["meta"] == meta
    assert [json.loads(r["meta"]) for r in out.rows()[:3]] == [{"n": i} for i in range(3)]


def test_big_integers_in_every_record_stay_exact(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    values = [2**64 + i for i in range(5)] + [2**53 + 1]
    path.write_text("".join(f'{{"text": "t{v}", "big": {v}}}\n' for v in values))
    out = ingest(tmp_path / "ws", [path])
    assert [json.loads(r["meta"])["big"] for r in out.rows()] == values


def test_nan_in_parquet_meta_with_nulls(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nan.parquet"
    table = pa.table({"text": ["a text", "b text"], "x": [float("nan"), 1.5], "y": [None, "set"]})
    pq.write_table(table, path)
    out = ingest(tmp_path / "ws", [path])
    assert [r["meta"] for r in out.rows()] == ['{"x":NaN}', '{"x":1.5,"y":"set"}']


def make_messy_directory(root: Path) -> Path:
    folder = root / "raw"
    write_jsonl(folder / "a.jsonl", [{"text": good_text(0)}])
    write_jsonl(folder / "sub" / "b.jsonl", [{"text": good_text(1)}])
    write_jsonl(folder / ".hidden.jsonl", [{"text": "hidden"}])
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "sub" / "loop").symlink_to("..")
    (folder / "self1").symlink_to("self2")
    (folder / "self2").symlink_to("self1")
    (folder / "dangling.jsonl").symlink_to("nowhere.jsonl")
    write_jsonl(root / "elsewhere" / "c.jsonl", [{"text": good_text(2)}])
    (folder / "linked").symlink_to(root / "elsewhere")
    return folder


EXPECTED_SKIPS = [
    {"path": "raw/.git", "reason": "hidden"},
    {"path": "raw/.hidden.jsonl", "reason": "hidden"},
    {"path": "raw/dangling.jsonl", "reason": "broken_symlink"},
    {"path": "raw/self1", "reason": "symlink_loop"},
    {"path": "raw/self2", "reason": "symlink_loop"},
    {"path": "raw/sub/loop", "reason": "symlink_loop"},
]


def test_skipped_inputs_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_messy_directory(tmp_path)
    skipped: list[dict[str, str]] = []
    found = expand_inputs(["raw"], IngestOptions(), skipped=skipped)
    assert sorted(source for _, source, _ in found) == [
        "raw/a.jsonl",
        "raw/linked/c.jsonl",
        "raw/sub/b.jsonl",
    ]
    assert sorted(skipped, key=lambda s: s["path"]) == EXPECTED_SKIPS


@pytest.mark.usefixtures("prefect_server")
def test_ingest_flow_reports_skipped_inputs(tmp_path: Path) -> None:
    from gristmill.flows.tasks import ingest_flow

    folder = make_messy_directory(tmp_path)
    result = ingest_flow(str(tmp_path / "ws"), [str(folder)], "c")
    assert result["stats"]["documents"] == 3
    named = sorted(result["skipped_inputs"], key=lambda s: s["path"])
    assert [s["reason"] for s in named] == [s["reason"] for s in EXPECTED_SKIPS]
    assert [Path(s["path"]).name for s in named] == [Path(s["path"]).name for s in EXPECTED_SKIPS]


# -- settings and names: exit 2 with the setting's name, never a traceback -----------------------


@pytest.mark.usefixtures("prefect_server")
def test_bad_settings_and_case_only_name_clashes_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gristmill.cli import app

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, [*args, "-w", str(tmp_path / "ws")])
        return result.exit_code, result.output

    data = write_jsonl(tmp_path / "pool.jsonl", [{"text": good_text(i)} for i in range(6)])
    code, output = run("ingest", str(data), "--corpus", "Pool")
    assert code == 0, output
    code, output = run("ingest", str(data), "--corpus", "pool")
    assert code == 2 and "differs only in case" in output and "'Pool'" in output
    code, output = run(
        "select", "Pool", "--selector", "dedup", "--name", "d", "--param", "memory_limit=lots"
    )
    assert code == 2 and "memory_limit 'lots'" in output, output
    monkeypatch.setenv("GRISTMILL_LOCK_TIMEOUT", "abc")
    code, output = run("ingest", str(data), "--corpus", "Pool")
    assert code == 2 and "GRISTMILL_LOCK_TIMEOUT" in output and "'abc'" in output


def test_the_ingest_summary_names_skipped_entries(tmp_path: Path) -> None:
    from gristmill import cli

    skipped = [{"path": f"raw/.h{i}", "reason": "hidden"} for i in range(12)]
    result = {
        "stats": {"documents": 1, "text_bytes": 1, "rejected": 0, "rejects_by_reason": {}},
        "added": {"documents": 1, "rejected": 0}, "chunks": 1, "chunks_skipped": 0,
        "skipped_inputs": skipped,
    }  # fmt: skip
    with cli.out.capture() as captured:
        cli._print_ingest("c", result)
    text = captured.get()
    assert "skipped 12 directory entries: raw/.h0 (hidden)" in text and "2 more" in text
