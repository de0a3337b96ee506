"""Build the effect study's data from ../shared/data: a multi-domain pool with planted
duplicates, junk and test-set contamination, a disjoint base-pretraining corpus, and the
SST-2, AG News and Alpaca task sets. Deterministic: the same inputs give the same files.

    python examples/study/build_data.py --shared ../shared/data --out examples/study/data

Nothing here is committed: the output directory is ignored by git.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import string
from pathlib import Path

# Documents per domain: (pool, base). The base corpus pretrains the shared base model and
# never overlaps the pool, so continued pretraining shows what each selection adds.
DOMAIN_SIZES = {
    "encyclopedic": (400, 300),
    "stories": (400, 400),
    "literature": (300, 300),
    "reviews": (500, 300),
    "news": (1000, 500),
    "science": (600, 400),
    "code": (250, 200),
    "pile": (300, 300),
}
TASK_SIZES = {"sst2_train": 3000, "agnews_train": 3000, "agnews_test": 1000, "alpaca": 3000}
MAX_CHARS = 3000  # long code files and Pile documents are cut to keep the pool small
DUPLICATED_DOCS = 60  # each copied 2 to 10 times
NEAR_DUPLICATED_DOCS = 60  # each with two lightly edited copies
JUNK_DOCS = 200
CONTAMINATED_NEWS = 150  # AG News test articles planted in the pool
CONTAMINATED_SENTIMENT = 100  # SST-2 test sentences planted inside pool reviews


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def _tsv(path: Path, header: bool) -> list[tuple[str, str]]:
    """(text, label) rows; the label is after the last tab (texts may hold quotes)."""
    rows = [line.rsplit("\t", 1) for line in _lines(path)[int(header) :] if line.strip()]
    return [(text, label) for text, label in rows]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in _lines(path) if line.strip()]


def domain_documents(
    shared: Path, rng: random.Random, news_rows: list[tuple[str, str]]
) -> dict[str, list]:
    """Candidate documents of every domain, shuffled by `rng`."""
    wiki = [
        line.strip()
        for line in _lines(shared / "wikitext2_raw_test" / "wiki.test.raw")
        if len(line.strip()) >= 300 and not line.strip().startswith("=")
    ]
    stories = (shared / "tinystories_2mib" / "tinystories_sample.txt").read_text(encoding="utf-8")
    play = _lines(shared / "tinyshakespeare" / "input.txt")
    imdb = _jsonl(shared / "imdb_test" / "imdb_test.jsonl")
    with (shared / "arxiv_abstracts_sample" / "arxiv_data.csv").open(encoding="utf-8") as f:
        arxiv = [row["summaries"].replace("\n", " ") for row in csv.DictReader(f)]
    scicite = [r["text"] for r in _jsonl(shared / "scicite_scibert" / "train.jsonl")]
    code_files = _jsonl(shared / "python_code_thealgorithms" / "python_files.jsonl")
    code = [r["content"] for r in code_files]
    pile = [r["contents"] for r in _jsonl(shared / "pile_toy_dsir" / "toy_pile_data.jsonl")]
    domains = {
        "encyclopedic": wiki,
        "stories": [s.strip() for s in stories.split("<|endoftext|>") if len(s.strip()) > 200],
        "literature": ["\n".join(play[i : i + 30]) for i in range(0, len(play), 30)],
        "reviews": [r["text"].replace("<br />", "\n") for r in imdb],
        "news": [text for text, _ in news_rows],
        "science": arxiv + scicite[:1000],
        "code": [c for c in code if len(c) > 300],
        "pile": [p for p in pile if len(p) > 200],
    }
    for docs in domains.values():
        rng.shuffle(docs)
    return {k: [d[:MAX_CHARS] for d in v] for k, v in domains.items()}


def junk(rng: random.Random) -> str:
    """One junk document: random characters, boilerplate, number tables or a repeated word."""
    kind = rng.randrange(4)
    if kind == 0:
        alphabet = string.ascii_letters + string.digits + string.punctuation
        return "".join(rng.choice(alphabet + " ") for _ in range(rng.randint(200, 1200)))
    if kind == 1:
        lines = ["Click here to subscribe!", "Buy now - limited offer!!!", "Cookies policy | Login"]
        return "\n".join(rng.choice(lines) for _ in range(rng.randint(10, 60)))
    if kind == 2:
        rows = [" ".join(str(rng.randint(0, 9999)) for _ in range(8)) for _ in range(40)]
        return "\n".join(rows)
    return " ".join([rng.choice(["lorem", "asdf", "qwerty", "xxx"])] * rng.randint(50, 400))


def edit(text: str, rng: random.Random) -> str:
    """A near duplicate: a few words dropped and a short prefix added."""
    words = text.split(" ")
    for _ in range(max(1, len(words) // 50)):
        if len(words) > 2:
            del words[rng.randrange(len(words))]
    return rng.choice(["Update: ", "Repost: ", "Via mirror: "]) + " ".join(words)


def build(shared: Path, out: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    """Write every file of the study into `out` (`scale` shrinks every count, for a smoke
    test); returns the number of records of each file."""

    def scaled(count: int) -> int:
        return max(2, round(count * scale))

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    news_rows = _tsv(shared / "agnews_alps" / "dev.tsv", header=False)  # AG News training split
    rng.shuffle(news_rows)
    n_agnews = scaled(TASK_SIZES["agnews_train"])
    agnews_train, news_rest = news_rows[:n_agnews], news_rows[n_agnews:]
    domains = domain_documents(shared, rng, news_rest)

    pool, base = [], []
    for domain, sizes in DOMAIN_SIZES.items():
        n_pool, n_base = (scaled(n) for n in sizes)
        docs = domains[domain]
        if len(docs) < n_pool + n_base:
            raise SystemExit(f"{domain}: only {len(docs)} documents for {n_pool} + {n_base}")
        pool += [{"text": t, "domain": domain, "planted": "none"} for t in docs[:n_pool]]
        base += [{"text": t, "domain": domain} for t in docs[n_pool : n_pool + n_base]]

    sst2_test = _tsv(shared / "sst2_alps" / "test.tsv", header=True)
    agnews_test = _tsv(shared / "agnews_alps" / "test.tsv", header=False)
    rng.shuffle(agnews_test)
    agnews_test = agnews_test[: scaled(TASK_SIZES["agnews_test"])]

    planted = []
    for doc in rng.sample(pool, scaled(DUPLICATED_DOCS)):
        planted += [{**doc, "planted": "duplicate"}] * rng.randint(2, 10)
    for doc in rng.sample(pool, scaled(NEAR_DUPLICATED_DOCS)):
        planted += [{**doc, "text": edit(doc["text"], rng), "planted": "near_duplicate"}] * 2
    planted += [
        {"text": junk(rng), "domain": "junk", "planted": "junk"} for _ in range(scaled(JUNK_DOCS))
    ]
    planted += [
        {"text": text, "domain": "news", "planted": "contamination"}
        for text, _ in agnews_test[: scaled(CONTAMINATED_NEWS)]
    ]
    reviews = [d for d in pool if d["domain"] == "reviews"]
    sentences = rng.sample(sst2_test, scaled(CONTAMINATED_SENTIMENT))
    for (sentence, _), review in zip(
        sentences, rng.sample(reviews, scaled(CONTAMINATED_SENTIMENT)), strict=True
    ):
        text = f"{review['text'][:600]} {sentence}"
        planted.append({"text": text, "domain": "reviews", "planted": "contamination"})
    pool += planted
    rng.shuffle(pool)

    sst2_rows = _tsv(shared / "sst2_alps" / "train.tsv", header=True)
    rng.shuffle(sst2_rows)
    alpaca = json.loads((shared / "alpaca_subset" / "alpaca_5000.json").read_text("utf-8"))
    rng.shuffle(alpaca)
    files = {
        "pool": pool,
        "base": base,
        "sst2_train": [
            {"text": t, "label": y} for t, y in sst2_rows[: scaled(TASK_SIZES["sst2_train"])]
        ],
        "sst2_test": [{"text": t, "label": y} for t, y in sst2_test],
        "agnews_train": [{"text": t, "label": y} for t, y in agnews_train],
        "agnews_test": [{"text": t, "label": y} for t, y in agnews_test],
        "alpaca": [
            {"instruction": r["instruction"], "input": r["input"], "text": r["output"]}
            for r in alpaca[: scaled(TASK_SIZES["alpaca"])]
            if r["output"].strip()
        ],
    }
    for name, records in files.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return {name: len(records) for name, records in files.items()}


def main() -> None:
    """Command line: --shared DIR --out DIR [--seed N]."""
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=here.parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=here / "data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every count")
    args = parser.parse_args()
    for name, count in build(args.shared, args.out, args.seed, args.scale).items():
        print(f"{name}: {count} records")


if __name__ == "__main__":
    main()
