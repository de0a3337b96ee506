"""WARC to text: gristmill's ingest vs datatrove's WarcReader + Trafilatura on the same WARCs.

Inputs: the two test WARCs of shared/data/web_warc (real HTML: the Debian Reference in nine
languages and the Python 3.11 docs, with planted non-HTML records, a redirect, a 404, charset
traps and a file cut off mid-record). Each system runs in its own fresh subprocess, one after
another, on one core's worth of work:

* gristmill-trafilatura / gristmill-resiliparse: `gristmill.pipeline.ingest(...)` (the library
  pipeline, serial map: one worker) with `IngestOptions(extractor=...)`, into a new workspace;
* datatrove (the reference for agreement) and datatrove-timeout60 (the same with
  `Trafilatura(timeout=60)`, so that big pages are not dropped after 1 s):
  `LocalPipelineExecutor([WarcReader, Trafilatura(), JsonlWriter], tasks=1,
  workers=1)` as its README shows it (Trafilatura with its defaults: favour_precision,
  deduplicate, a 1 s timeout per page in a sandbox process), except that WarcReader gets
  `compression=None`: with its default ("infer") the truncated test file makes Python's gzip
  raise EOFError and the whole task fails.

Figures: pages extracted; mean token-level F1 per page of each system's text against
datatrove's (tokens: lower-cased `\\w+` runs, as multisets; over datatrove's pages, one
missing here counts 0; and over the pages both have); docs/s of wall time; docs per
CPU-second, the user+sys time of the child and its children (datatrove's extraction runs in a
child process), which is
docs/s per core; peak RSS (`ru_maxrss` of the child and, separately, of its children, from
`os.wait4` and `getrusage`; for gristmill also at the end of the ingest call, before the
benchmark reads the texts back). Memory flatness: gristmill again on the clean WARC concatenated
4 times (gzip members concatenate into a valid WARC.gz).

Language agreement (issue 17 item 6) is left to the language selector's run: see
BENCHMARKS.md.

    python benchmarks/web.py                    # everything (minutes: trafilatura is slow)
    python benchmarks/web.py --systems gristmill-resiliparse datatrove
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "web_warc"
WARCS = ("crawl-00000.warc.gz", "crawl-00001-truncated.warc.gz")
SYSTEMS = ("gristmill-trafilatura", "gristmill-resiliparse", "datatrove", "datatrove-timeout60")
TOKEN = re.compile(r"\w+")


def child_gristmill(extractor: str, folder: Path, work: Path) -> dict[str, Any]:
    """Ingest every WARC of `folder` with the library pipeline; texts by URL."""
    import pyarrow.parquet as pq

    from gristmill import pipeline
    from gristmill.storage.readers import IngestOptions
    from gristmill.storage.workspace import Workspace

    started = time.perf_counter()
    options = IngestOptions(extractor=extractor)
    inputs = [str(p) for p in sorted(folder.iterdir())]
    report = pipeline.ingest(work / "ws", inputs, "web", options)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the texts are read
    ws = Workspace(work / "ws")
    with ws.catalog(read_only=True) as con:
        files = ws.shard_files(con, "web")
    texts = {}
    for file in files:
        for row in pq.read_table(file, columns=["text", "meta"]).to_pylist():
            texts[json.loads(row["meta"])["url"]] = row["text"]
    stats = report.stats
    return {"seconds": seconds, "texts": texts, "stats": stats, "pages": stats["documents"],
            "ingest_peak_rss_kb": peak_kb}  # fmt: skip


def child_datatrove(folder: Path, work: Path, timeout: float) -> dict[str, Any]:
    """datatrove's WarcReader + Trafilatura + JsonlWriter, one task, one worker."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    started = time.perf_counter()
    executor = LocalPipelineExecutor(
        pipeline=[
            # compression=None: warcio inflates the gzip members itself. With the default
            # "infer", Python's gzip raises EOFError at the cut-off file and the task fails.
            WarcReader(str(folder), glob_pattern="*.warc.gz", compression=None),
            Trafilatura(timeout=timeout),
            JsonlWriter(str(work / "out"), compression=None),
        ],
        tasks=1,
        workers=1,
        logging_dir=str(work / "logs"),
    )
    executor.run()
    seconds = time.perf_counter() - started
    texts = {}
    for file in sorted((work / "out").glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            texts[doc["metadata"]["url"]] = doc["text"]
    return {"seconds": seconds, "texts": texts, "pages": len(texts)}


def run_child(system: str, folder: Path, work: Path, result_file: Path) -> None:
    """Run one system in this (child) process and write its result."""
    if system.startswith("datatrove"):
        result = child_datatrove(folder, work, 60 if system.endswith("timeout60") else 1)
    else:
        result = child_gristmill(system.removeprefix("gristmill-"), folder, work)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["children_cpu"] = children.ru_utime + children.ru_stime
    result["children_max_rss_kb"] = children.ru_maxrss
    result_file.write_text(json.dumps(result), encoding="utf-8")


def measure(system: str, folder: Path, scratch: Path) -> dict[str, Any]:
    """One system on the WARCs of `folder`, in a fresh subprocess."""
    work = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=scratch))
    result_file = work / "result.json"
    command = [sys.executable, __file__, "--child", system, str(folder), str(work)]
    command.append(str(result_file))
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "DO_NOT_TRACK": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{system} failed (status {status})")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    shutil.rmtree(work, ignore_errors=True)
    cpu = usage.ru_utime + usage.ru_stime + result.pop("children_cpu")
    pages = result["pages"]
    return {
        "system": system,
        "input_bytes": sum(p.stat().st_size for p in folder.iterdir()),
        "pages": pages,
        "seconds": round(result["seconds"], 2),
        "child_wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "docs_per_s": round(pages / result["seconds"], 2),
        "docs_per_cpu_s": round(pages / cpu, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "ingest_peak_rss_mb": round(result.get("ingest_peak_rss_kb", 0) / 1024, 1) or None,
        "children_peak_rss_mb": round(result.pop("children_max_rss_kb") / 1024, 1),
        "texts": result["texts"],
        "stats": result.get("stats"),
    }


def tokens(text: str | None) -> collections.Counter[str]:
    """Lower-cased word tokens of a text, as a multiset."""
    return collections.Counter(TOKEN.findall((text or "").lower()))


def token_f1(candidate: str | None, reference: str | None) -> float:
    """Token-level F1 of two texts (1.0 when both are empty)."""
    a, b = tokens(candidate), tokens(reference)
    if not a and not b:
        return 1.0
    overlap = sum((a & b).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(a.values()), overlap / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def agreement(texts: dict[str, str], reference: dict[str, str]) -> dict[str, Any]:
    """Mean token F1 per page against the reference's pages (one missing here scores 0), and
    over the pages both have."""
    scores = [token_f1(texts.get(u), text) for u, text in reference.items()]
    both = [token_f1(texts[u], text) for u, text in reference.items() if u in texts]
    return {
        "mean_f1": round(sum(scores) / len(scores), 4) if scores else None,
        "mean_f1_pages_both_have": round(sum(both) / len(both), 4) if both else None,
        "pages_only_here": len(set(texts) - set(reference)),
        "pages_only_in_reference": len(set(reference) - set(texts)),
    }


def concatenated(source: Path, times: int, dest: Path) -> Path:
    """A folder holding `source` concatenated `times` times (one WARC.gz)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"x{times}-{source.name}"
    with target.open("wb") as out:
        for _ in range(times):
            out.write(source.read_bytes())
    return dest


def main() -> None:
    """Run the systems and print the comparison as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--no-memory", action="store_true", help="skip the 1x/4x memory runs")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        system, folder, work, result_file = args.child
        run_child(system, Path(folder), Path(work), Path(result_file))
        return
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-web-bench-"))
    try:
        inputs = scratch / "inputs"
        inputs.mkdir()
        for name in WARCS:
            os.symlink(args.data / name, inputs / name)
        runs = {s: measure(s, inputs, scratch) for s in args.systems}
        reference = runs["datatrove"]["texts"] if "datatrove" in runs else None
        rows = []
        for run in runs.values():
            texts = run.pop("texts")
            if reference is not None:
                run["agreement_with_datatrove"] = agreement(texts, reference)
            rows.append(run)
        memory = []
        if not args.no_memory:
            clean = args.data / WARCS[0]
            for times in (1, 4):
                folder = concatenated(clean, times, scratch / f"x{times}")
                run = measure("gristmill-resiliparse", folder, scratch)
                run.pop("texts"), run.pop("stats"), run.pop("children_peak_rss_mb")
                memory.append({"copies": times, **run})
        versions = {}
        for package in ("trafilatura", "resiliparse", "warcio", "datatrove"):
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                versions[package] = None
        print(json.dumps({
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m": os.getloadavg()[0]},
            "versions": versions,
            "runs": rows,
            "memory_flat": memory,
        }, indent=1, default=str))  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
