"""WARC input: successful HTML responses become documents located by their record offset;
the rest is skipped by reason or rejected, counts reconcile, chunks and resumes keep ids."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import PROSE
from ingest_helpers import ingest, ingest_catalogued

from gristmill.errors import InputError
from gristmill.storage.readers import IngestOptions, detect_format, plan_chunks, read_chunk
from gristmill.storage.readers.html import decode_html

FAST = IngestOptions(extractor="resiliparse", chunk_bytes=1 << 20)
WARCS = ("crawl-00000.warc.gz", "crawl-00001-truncated.warc.gz")


def _read(paths: list[Path], options: IngestOptions) -> tuple[list[dict], list, Counter]:
    """Every document (extracted columns), reject and skip count of some inputs."""
    docs, rejects, skipped = [], [], Counter()
    for chunk in plan_chunks([str(p) for p in paths], options):
        for parsed in read_chunk(chunk, options):
            assert parsed.records == parsed.table.num_rows + len(parsed.rejects)
            docs += [{**row, "meta": json.loads(row["meta"])} for row in parsed.table.to_pylist()]
            rejects += parsed.rejects
            skipped += parsed.skipped
    return docs, rejects, skipped


def _record_count(path: Path) -> int:
    from warcio.archiveiterator import ArchiveIterator

    with path.open("rb") as handle:
        return sum(1 for _ in ArchiveIterator(handle))


@pytest.fixture(scope="module")
def crawl() -> dict[str, tuple[list[dict], list, Counter]]:
    from conftest import SHARED_DATA

    folder = SHARED_DATA / "web_warc"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    return {name: _read([folder / name], FAST) for name in WARCS}


def _warc(records: list[tuple[str, bytes, list[tuple[str, str]], str]]) -> bytes:
    """A gzip-per-record WARC of (url, payload, HTTP headers, status) responses."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for url, body, headers, status in records:
        http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
        record = writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), http_headers=http
        )
        writer.write_record(record)
    return buffer.getvalue()


PAGE = (
    "<html><head><title>Mill</title></head><body><nav><a href='/'>Home</a> | "
    "<a href='/about'>About us</a> | <a href='/shop'>Shop</a></nav><article><h1>The mill</h1>"
    + "".join(f"<p>{i}. {PROSE}</p>" for i in range(4))
    + "</article><footer>Cookie settings | Imprint</footer></body></html>"
)
HTML = [("Content-Type", "text/html; charset=utf-8")]


def test_warc_and_arc_files_are_detected_and_other_codecs_refused(tmp_path: Path) -> None:
    for name in ("a.warc", "a.warc.gz", "a.arc", "a.ARC.GZ"):
        assert detect_format(Path(name)) == "warc"
    path = tmp_path / "a.warc.zst"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="plain or gzip"):
        plan_chunks([str(path)], IngestOptions())
    path.with_suffix(".gz").write_bytes(b"x")
    with pytest.raises(InputError, match="keyed by their offset"):
        plan_chunks([str(path.with_suffix(".gz"))], IngestOptions(id_field="id"))


def test_test_crawl_counts_reconcile_per_reason(crawl, shared_data: Path) -> None:
    whole_docs, whole_rejects, whole_skipped = crawl[WARCS[0]]
    # 333 pages, 3 with their charset in the HTTP header only, 3 in a <meta> tag only.
    assert len(whole_docs) == 339 and whole_rejects == []
    assert whole_skipped == {
        "warc_warcinfo": 1, "warc_request": 333, "warc_metadata": 352,
        "not_html": 11, "redirect": 1, "http_error": 1,
    }  # fmt: skip
    cut_docs, cut_rejects, cut_skipped = crawl[WARCS[1]]
    assert [r.reason for r in cut_rejects] == ["truncated"]
    last = max(d["line"] for d in cut_docs)
    assert cut_rejects[0].line > last
    assert "bytes of its payload are missing" in cut_rejects[0].detail
    assert cut_rejects[0].raw  # what the file has of the page
    assert len(cut_docs) + cut_skipped["no_text"] == 325  # 326 pages, the last one cut
    for name, (docs, rejects, skipped) in crawl.items():
        read = _record_count(shared_data / "web_warc" / name)
        assert read == len(docs) + len(rejects) + sum(skipped.values()), name


def test_documents_locate_their_record(crawl, shared_data: Path) -> None:
    docs = crawl[WARCS[0]][0]
    data = (shared_data / "web_warc" / WARCS[0]).read_bytes()
    for doc in docs[::40]:
        header = zlib.decompressobj(wbits=31).decompress(data[doc["line"] :], 4096)
        assert header.startswith(b"WARC/1.0\r\nWARC-Type: response\r\n")
        meta = doc["meta"]
        assert f"WARC-Record-ID: {meta['warc_record_id']}".encode() in header
        assert f"WARC-Target-URI: {meta['url']}".encode() in header
        assert f"WARC-Date: {meta['fetch_date']}".encode() in header
        assert doc["domain"] in ("www.debian.org", "docs.python.org")
        assert meta["url"].startswith(f"https://{doc['domain']}/")


def test_charset_from_header_then_meta(crawl) -> None:
    docs = {d["meta"]["url"]: d for d in crawl[WARCS[0]][0]}
    header_only = [d for u, d in docs.items() if u.endswith("-cp1252.html")]
    meta_only = [d for u, d in docs.items() if u.endswith("-meta.html")]
    assert len(header_only) == len(meta_only) == 3
    for doc in header_only:  # the page's own <meta> says utf-8: the header wins
        assert (doc["meta"]["charset"], doc["meta"]["charset_from"]) == ("cp1252", "http")
        assert "\ufffd" not in doc["text"]
    for doc in meta_only:
        assert (doc["meta"]["charset"], doc["meta"]["charset_from"]) == ("utf-8", "meta")
    # The same pages decoded either way give the same text, but for what cp1252 cannot hold.
    for doc in header_only:
        twin = docs[doc["meta"]["url"].replace("-cp1252", "-meta")]
        lossy = twin["text"].encode("cp1252", errors="replace").decode("cp1252")
        assert doc["text"] == lossy


def test_charset_detection_and_binary_payload() -> None:
    latin = "Müller’s café: naïve façade".encode("cp1252")
    text, _, origin = decode_html(b"<p>" + latin * 20 + b"</p>", None)
    assert origin == "detected" and "Müller’s café" in text
    assert decode_html(b"<meta charset='utf-8'><p>\xc3\xa9</p>", "bogus-charset")[1:] == (
        "utf-8",
        "meta",
    )
    with pytest.raises(ValueError, match="NUL bytes"):
        decode_html(b"\x00garbage" * 10, None)


def test_extractors_keep_main_text_and_drop_boilerplate(tmp_path: Path) -> None:
    body = PAGE.encode()
    path = tmp_path / "site.warc.gz"
    path.write_bytes(_warc([("https://mill.example/a", body, HTML, "200 OK")]))
    for extractor in ("trafilatura", "resiliparse"):
        docs, _, _ = _read([path], IngestOptions(extractor=extractor))
        (doc,) = docs
        assert "The river turned the wheel" in doc["text"] and "3. The river" in doc["text"]
        assert "About us" not in doc["text"] and "Cookie settings" not in doc["text"], extractor
        assert doc["line"] == 0 and doc["domain"] == "mill.example"


def test_bad_records_are_rejects_with_their_offset(tmp_path: Path) -> None:
    pages = [
        ("https://a.example/ok", PAGE.encode(), HTML, "200 OK"),
        ("https://a.example/gz", b"\x00not gzip" * 50,
         [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], "200 OK"),
        ("https://a.example/big", PAGE.encode() * 40, HTML, "200 OK"),
        ("https://a.example/empty", b"<html><body></body></html>", HTML, "200 OK"),
        ("https://a.example/gone", b"<html>gone</html>", HTML, "410 Gone"),
        ("https://a.example/raw", PAGE.encode(), [], "200 OK"),  # no Content-Type: sniffed
        ("https://a.example/img", b"\x89PNG\r\n", [("Content-Type", "image/png")], "200 OK"),
    ]  # fmt: skip
    path = tmp_path / "bad.warc.gz"
    path.write_bytes(_warc(pages))
    options = IngestOptions(extractor="resiliparse", max_doc_bytes=20_000)
    docs, rejects, skipped = _read([path], options)
    assert [d["meta"]["url"] for d in docs] == ["https://a.example/ok", "https://a.example/raw"]
    assert [r.reason for r in rejects] == ["undecodable", "oversize"]
    assert skipped == {"no_text": 1, "http_error": 1, "not_html": 1}
    data = path.read_bytes()
    for reject, url in zip(rejects, ("gz", "big"), strict=True):
        header = gzip.decompress(data[reject.line :])[:600]
        assert f"https://a.example/{url}".encode() in header and reject.raw


def test_arc_files_are_read(tmp_path: Path) -> None:
    body = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + PAGE.encode()
    fields = b"1 0 Test\nURL IP-address Archive-date Content-type Archive-length\n"
    head = b"filedesc://t.arc 0.0.0.0 20260101000000 text/plain %d\n" % len(fields) + fields
    record = b"http://b.example/x 1.2.3.4 20260101120000 text/html %d\n" % len(body) + body
    (tmp_path / "t.arc").write_bytes(head + b"\n" + record + b"\n")
    (tmp_path / "t.arc.gz").write_bytes(gzip.compress(head + b"\n") + gzip.compress(record))
    for name in ("t.arc", "t.arc.gz"):
        docs, rejects, skipped = _read([tmp_path / name], FAST)
        assert (len(docs), rejects, skipped) == (1, [], {"arc_header": 1})
        assert docs[0]["meta"]["fetch_date"] == "2026-01-01T12:00:00Z"
        assert "warc_record_id" not in docs[0]["meta"]  # an ARC record has none
        assert docs[0]["domain"] == "b.example"


def test_chunks_at_record_members_give_the_same_documents(shared_data: Path, tmp_path: Path):
    path = shared_data / "web_warc" / WARCS[1]
    small = IngestOptions(extractor="resiliparse", chunk_bytes=700_000)
    chunks = plan_chunks([str(path)], small)
    assert len(chunks) >= 7 and chunks[0].start == 0 and chunks[-1].end is None
    data = path.read_bytes()
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start
        member = zlib.decompressobj(wbits=31).decompress(data[after.start :], 16)
        assert member.startswith(b"WARC/1.0")
    split = ingest(tmp_path / "split", [path], small)
    whole = ingest(tmp_path / "whole", [path], IngestOptions(extractor="resiliparse"))
    assert len(whole.results) == 1
    assert split.rows() == whole.rows() and split.reasons() == whole.reasons()


def test_corrupt_member_is_one_reject_and_later_chunks_are_read(
    crawl, shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / "web_warc" / WARCS[0]
    small = FAST  # 1 MiB chunks: the crawl fixture read the intact file with them
    chunks = plan_chunks([str(source)], small)
    clean = crawl[WARCS[0]][0]
    target = next(d["line"] for d in clean if 1_100_000 < d["line"] < chunks[2].start)
    data = bytearray(source.read_bytes())
    data[target + 40 : target + 200] = b"\x00GARBAGE" * 20
    path = tmp_path / "broken.warc.gz"
    path.write_bytes(bytes(data))
    docs, rejects, _ = _read([path], small)
    assert [(r.line, r.reason) for r in rejects] == [(target, "corrupt")]
    assert "to the end of the chunk are not read" in rejects[0].detail
    lost = [d for d in clean if target <= d["line"] < chunks[2].start]
    assert [d["line"] for d in docs] == [d["line"] for d in clean if d not in lost]


def test_sigkill_mid_warc_then_resume_gives_identical_ids(shared_data: Path, tmp_path: Path):
    source = shared_data / "web_warc" / WARCS[0]
    script = (
        "import sys\nfrom gristmill import pipeline\n"
        "from gristmill.storage.readers import IngestOptions\n"
        "options = IngestOptions(extractor='resiliparse', chunk_bytes=256 << 10, shard_bytes=1)\n"
        "pipeline.ingest(sys.argv[1], [sys.argv[2]], 'web', options)\n"
    )
    ws = tmp_path / "ws"
    child = subprocess.Popen([sys.executable, "-c", script, str(ws), str(source)])
    deadline = time.monotonic() + 120
    shards = ws / "corpora" / "web"
    while time.monotonic() < deadline and len(list(shards.glob("*.parquet"))) < 3:
        assert child.poll() is None, "the ingest ended before it was killed"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    options = IngestOptions(extractor="resiliparse", chunk_bytes=256 << 10, shard_bytes=1)
    resumed = ingest_catalogued(ws, [source], "web", options)
    clean = ingest_catalogued(tmp_path / "clean", [source], "web", options)

    def documents(workspace) -> list[tuple]:
        with workspace.catalog(read_only=True) as con:
            files = workspace.shard_files(con, "web")
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        return sorted((r["doc_id"], r["source_line"], r["text"], r["meta"]) for r in rows)

    assert documents(resumed) == documents(clean)
    assert len(documents(clean)) == 339
    assert not list(shards.glob(".*"))


def test_stats_count_skips_by_reason_and_reconcile(shared_data: Path, tmp_path: Path) -> None:
    from gristmill.storage import queries

    folder = shared_data / "web_warc"
    ws = ingest_catalogued(tmp_path / "ws", [folder / n for n in WARCS], "web", FAST)
    stats = queries.corpus_stats(ws, "web")
    assert stats["reconciles"] and stats["records_read"] == 1038 + 978
    assert (stats["documents"], stats["rejected"]) == (339 + 324, 1)
    assert stats["skipped_by_reason"]["warc_request"] == 333 + 326
    assert stats["skipped_by_reason"]["redirect"] == 1
    assert stats["skipped"] == sum(stats["skipped_by_reason"].values())
