"""Language identification: accuracy and speed of each model the `language` selector offers.

Two sets from shared/data, each document with a known language:

* web: every Debian Reference page (HTML 200 responses) of the test WARCs, its language taken
  from the URL (`ch01.de.html` -> de, `ch01.zh-cn.html` -> zh; no code -> en), plus the Python
  docs pages (English). Main text extracted with Resiliparse (`extract_plain_text`,
  main_content=True) after decoding with the HTTP or detected charset; pages with no text left
  are skipped and counted.
* short: a sample of SST-2 sentences (test split) and the 3,000 UCI sentiment sentences
  (Amazon, IMDb, Yelp), all English.

For each model: accuracy per language and overall (top language == expected), and docs/s of
identification alone (one process, one thread; texts already extracted; model load excluded,
reported separately). Prints a table and, with --json, writes the figures as JSON.

    python benchmarks/language_id.py --models fasttext lingua cld2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

from gristmill.selectors.language import MODEL_PACKAGES, identifier, normalize_code

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DEBIAN_URL = re.compile(r"/debian-reference/[^?#]*?(?:\.([a-z]{2}(?:-[a-z]{2})?))?\.html$")


def url_language(url: str) -> str | None:
    """The language a test-WARC URL is published in (None: not a page of the two manuals)."""
    if "docs.python.org" in url:
        return "en"
    match = DEBIAN_URL.search(url)
    if match is None:
        return None
    return normalize_code(match.group(1) or "en")


def web_documents(
    data: Path, only: str | None = None
) -> tuple[list[tuple[str, str, str]], Counter[str]]:
    """(url, expected language, main text) per HTML page of the test WARCs (only those whose URL
    contains `only`, if given); skips counted."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from warcio.archiveiterator import ArchiveIterator

    pages: list[tuple[str, str, str]] = []
    skipped: Counter[str] = Counter()
    for path in sorted((data / "web_warc").glob("*.warc.gz")):
        with path.open("rb") as stream:
            records = ArchiveIterator(stream)
            while True:
                try:
                    record = next(records)
                    body = record.content_stream().read() if record.rec_type == "response" else b""
                except StopIteration:
                    break
                except Exception:  # the truncated file's last record
                    skipped["truncated"] += 1
                    break
                url = record.rec_headers.get_header("WARC-Target-URI", "")
                if record.rec_type != "response" or (only is not None and only not in url):
                    continue
                http = record.http_headers
                content_type = http.get_header("Content-Type", "") if http else ""
                if http is None or http.get_statuscode() != "200" or "html" not in content_type:
                    skipped["not an HTML 200"] += 1
                    continue
                charset = re.search(r"charset=([\w-]+)", content_type)
                encoding = charset.group(1) if charset else detect_encoding(body)
                text = extract_plain_text(bytes_to_str(body, encoding), main_content=True)
                expected = url_language(url)
                if expected is None:
                    skipped["unknown url"] += 1
                elif not text.strip():
                    skipped["no text"] += 1
                else:
                    pages.append((url, expected, text))
    return pages, skipped


def short_documents(data: Path, sst2_sample: int) -> list[tuple[str, str, str]]:
    """(source, "en", sentence) for the first `sst2_sample` SST-2 test sentences and the UCI set."""

    def sentences(path: Path) -> list[str]:  # split on newlines only: texts hold U+2028 etc.
        lines = path.read_text(encoding="utf-8").split("\n")
        return [line.rsplit("\t", 1)[0] for line in lines if line.strip()]

    found = [("sst2", "en", s) for s in sentences(data / "sst2_alps" / "test.tsv")[1:]]
    found = found[:sst2_sample]
    for path in sorted((data / "sentiment_labelled_sentences").glob("*_labelled.txt")):
        found += [(path.stem.split("_")[0], "en", s) for s in sentences(path)]
    return found


Document = tuple[str, str, str, str]  # (group, expected language, text, where: URL or source)


def measure(model: str, documents: list[Document], max_chars: int) -> dict[str, Any]:
    """Accuracy per group and overall, docs/s, the confusions and the first misses."""
    started = time.perf_counter()
    identify = identifier(model, max_chars)
    identify(["warm up the model"])
    load_s = time.perf_counter() - started
    texts = [text for _, _, text, _ in documents]
    started = time.perf_counter()
    found = identify(texts)
    seconds = time.perf_counter() - started
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    confusions: dict[str, Counter[str]] = defaultdict(Counter)
    misses = []
    for (group, expected, text, where), (lang, score, *_) in zip(documents, found, strict=True):
        total[group] += 1
        if lang == expected:
            right[group] += 1
        else:
            confusions[group][lang] += 1
            misses.append({"where": where, "expected": expected, "found": lang,
                           "score": round(score, 3), "text": text[:80]})  # fmt: skip
    return {
        "model": model,
        "package": f"{MODEL_PACKAGES[model]}=={metadata.version(MODEL_PACKAGES[model])}",
        "documents": len(documents),
        "accuracy": sum(right.values()) / len(documents),
        "per_group": {
            group: {
                "documents": total[group],
                "accuracy": right[group] / total[group],
                "confused_with": dict(confusions[group].most_common(3)),
            }
            for group in sorted(total)
        },
        "docs_per_s": len(documents) / seconds,
        "seconds": seconds,
        "load_s": load_s,
        "misses": misses[:10],
    }


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    """One row per (set, model, group) and an overall row per (set, model)."""
    print(f"{'set':<7} {'model':<9} {'group':<12} {'docs':>6} {'accuracy':>9} {'docs/s':>9}")
    for name, rows in results.items():
        for row in rows:
            for group, cell in row["per_group"].items():
                confused = ", ".join(f"{k} {v}" for k, v in cell["confused_with"].items())
                print(f"{name:<7} {row['model']:<9} {group:<12} {cell['documents']:>6} "
                      f"{cell['accuracy']:>9.2%} {'':>9} {confused}")  # fmt: skip
            print(f"{name:<7} {row['model']:<9} {'ALL':<12} {row['documents']:>6} "
                  f"{row['accuracy']:>9.2%} {row['docs_per_s']:>9.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; exit 1 when the shared data is missing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--models", nargs="+", default=list(MODEL_PACKAGES))
    parser.add_argument("--max-chars", type=int, default=20_000)
    parser.add_argument("--sst2-sample", type=int, default=872, help="SST-2 test sentences")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not (args.data / "web_warc").is_dir():
        print(f"shared data not found at {args.data}", file=sys.stderr)
        return 1
    pages, skipped = web_documents(args.data)
    sets: dict[str, list[Document]] = {
        "debian": [(lang, lang, text, url) for url, lang, text in pages if "debian" in url],
        "python": [("python-docs", lang, text, url) for url, lang, text in pages
                   if "debian" not in url],
        "short": [(source, lang, text, source) for source, lang, text in
                  short_documents(args.data, args.sst2_sample)],
    }  # fmt: skip
    print(", ".join(f"{name}: {len(docs)}" for name, docs in sets.items())
          + f" (pages skipped: {dict(skipped)})")  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in sets}
    for model in args.models:
        for name, documents in sets.items():
            results[name].append(measure(model, documents, args.max_chars))
    print_table(results)
    for name, rows in results.items():
        for row in rows:
            for miss in row["misses"][:3]:
                print(f"miss {name} {row['model']}: {miss}")
    if args.json:
        figures = {"max_chars": args.max_chars, "web_skipped": dict(skipped), **results}
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
