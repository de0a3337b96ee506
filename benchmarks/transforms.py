"""Transform speed and effect: each transform alone over real text, then the whole library step.

Data (../shared/data): the IMDB test split (25,000 reviews, with <br /> tags and entities) and,
when fastwarc and resiliparse are installed, the HTML pages of web_warc/crawl-00000.warc.gz
extracted with resiliparse's main-content extractor (a stand-in for the WARC reader: only
successful text/html responses, the URL's host as the domain).

For each data set: docs/s and MB/s of each transform's `apply` in this process (one thread),
then `pipeline.transform` with pii,normalize,lines (or --chain) over a workspace (serial map):
wall time, documents kept and dropped per reason, total changes per transform, the cached re-run.

    .venv/bin/python benchmarks/transforms.py [--limit N] [--chain lines,pii,normalize]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from gristmill import pipeline
from gristmill.pipeline.transformation import transform
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace
from gristmill.transforms import get

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHAIN = ["pii", "normalize", "lines"]  # --chain reorders them for the whole step


def imdb(limit: int | None) -> list[dict]:
    """IMDB test reviews as records (one domain)."""
    rows = []
    with open(DATA / "imdb_test" / "imdb_test.jsonl", encoding="utf-8") as handle:
        for line in handle:
            rows.append({"text": json.loads(line)["text"], "site": "imdb"})
            if limit and len(rows) >= limit:
                break
    return rows


def warc_pages(limit: int | None) -> list[dict]:
    """Main text of the test WARC's HTML pages, with URL and host; [] without the readers."""
    try:
        from fastwarc.warc import ArchiveIterator, WarcRecordType
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    except ImportError:
        return []
    rows = []
    with open(DATA / "web_warc" / "crawl-00000.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle, record_types=WarcRecordType.response):
            http = record.http_headers
            if http is None or http.status_code != 200:
                continue
            if "html" not in (http.get("Content-Type") or ""):
                continue
            body = record.reader.read()
            text = extract_plain_text(bytes_to_str(body, detect_encoding(body)), main_content=True)
            url = record.headers.get("WARC-Target-URI")
            if text.strip():
                rows.append({"text": text, "url": url, "site": urlsplit(url).hostname})
            if limit and len(rows) >= limit:
                break
    return rows


def per_transform(rows: list[dict]) -> dict[str, dict]:
    """docs/s and MB/s of each transform's apply alone (lines: its repeated rule off)."""
    texts = [r["text"] for r in rows]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    found = {}
    for name in CHAIN:
        params = {"repeated_min_pages": None} if name == "lines" else {}
        transform_ = get(name).from_params(params)
        start = time.perf_counter()
        changed = sum(bool(transform_.apply(text, "d").changes) for text in texts)
        seconds = time.perf_counter() - start
        found[name] = {"docs_per_s": round(len(texts) / seconds),
                       "mb_per_s": round(mb / seconds, 2), "changed_docs": changed}  # fmt: skip
    return found


def whole_step(rows: list[dict], label: str, chain: list[str]) -> dict:
    """pipeline.transform over an ingested corpus: timing, counts, changes; and the re-run."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / f"{label}.jsonl"
        raw.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        ws = Workspace(Path(tmp) / "ws")
        pipeline.ingest(ws, [str(raw)], label, IngestOptions(domain_field="site"))
        start = time.perf_counter()
        report = transform(ws, label, chain, f"{label}-clean")
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        again = transform(ws, label, chain, f"{label}-clean")
        rerun = time.perf_counter() - start
    return {
        "chain": chain, "documents_read": report.documents_read, "documents": report.documents,
        "dropped_by_reason": report.dropped_by_reason, "changes": report.changes,
        "changed_documents": report.changed_documents, "seconds": round(seconds, 2),
        "docs_per_s": round(report.documents_read / seconds), "rerun_seconds": round(rerun, 2),
        "rerun_shards_done": again.shards_done, "repeated_lines_learned": report.statistics,
    }  # fmt: skip


def main() -> None:
    """Run both data sets and print one JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="documents per data set")
    parser.add_argument("--chain", default=",".join(CHAIN), help="the whole step's transforms")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    result = {"machine": f"{platform.processor() or platform.machine()}, one thread",
              "python": platform.python_version()}  # fmt: skip
    for label, rows in (("imdb", imdb(args.limit)), ("warc", warc_pages(args.limit))):
        if not rows:
            result[label] = "skipped: fastwarc and resiliparse are not installed"
            continue
        result[label] = {"documents": len(rows), "per_transform": per_transform(rows),
                         "whole_step": whole_step(rows, label, args.chain.split(","))}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
