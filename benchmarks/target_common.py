"""Shared pieces of the target-selection benchmarks: real multi-domain text and a library ingest.

Domains come from ../shared/data (one dataset = one domain). Nothing is copied into the
repository: the benchmarks read the files in place and write a scratch workspace.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from gristmill import pipeline
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
csv.field_size_limit(1 << 30)


def _news() -> list[str]:
    with (DATA_DIR / "ag_news_csv" / "test.csv").open(encoding="utf-8") as handle:
        return [f"{row[1]}. {row[2]}".replace("\\", " ") for row in csv.reader(handle)]


def _reviews() -> list[str]:
    lines = (DATA_DIR / "imdb_test" / "imdb_test.jsonl").open(encoding="utf-8")
    return [json.loads(line)["text"] for line in lines]


def _science() -> list[str]:
    with (DATA_DIR / "arxiv_abstracts_sample" / "arxiv_data.csv").open(encoding="utf-8") as f:
        return [" ".join(row["summaries"].split()) for row in csv.DictReader(f)]


def _stories() -> list[str]:
    text = (DATA_DIR / "tinystories_2mib" / "tinystories_sample.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


def _citations() -> list[str]:
    lines = (DATA_DIR / "scicite_scibert" / "train.jsonl").open(encoding="utf-8")
    return [json.loads(line)["text"] for line in lines]


def _code() -> list[str]:
    lines = (DATA_DIR / "python_code_thealgorithms" / "python_files.jsonl").open(encoding="utf-8")
    return [c for c in (json.loads(line)["content"] for line in lines) if len(c) > 200]


def _instructions() -> list[str]:
    records = json.loads((DATA_DIR / "alpaca_subset" / "alpaca_5000.json").read_text())
    return [f"{r['instruction']}\n{r['input']}\n{r['output']}".strip() for r in records]


def _wiki() -> list[str]:
    text = (DATA_DIR / "wikitext2_raw_test" / "wiki.test.raw").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if len(line.strip()) > 300]


DOMAINS = {
    "news": _news,
    "reviews": _reviews,
    "science": _science,
    "stories": _stories,
    "citations": _citations,
    "code": _code,
    "instructions": _instructions,
    "wiki": _wiki,
}


def load_domains(per_domain: int, seed: int = 0) -> dict[str, list[str]]:
    """Up to `per_domain` documents of each domain, a seeded random sample."""
    rng = random.Random(seed)
    out = {}
    for name, loader in DOMAINS.items():
        docs = [d for d in loader() if d.strip()]
        rng.shuffle(docs)
        out[name] = docs[:per_domain]
    return out


def write_corpus(path: Path, docs: list[tuple[str, str]]) -> Path:
    """Write (domain, text) pairs as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for domain, text in docs:
            handle.write(json.dumps({"text": text, "domain": domain}) + "\n")
    return path


def ingest(ws: Workspace, corpus: str, path: Path, options: IngestOptions | None = None) -> None:
    """Ingest a JSONL file into a corpus through the library pipeline (no Prefect)."""
    pipeline.ingest(ws, [str(path)], corpus, options or IngestOptions(domain_field="domain"))
