"""Planted check and speed of the `cartography` selector on a real classification set.

`--flip` of the examples (10%) get a wrong label (another class, drawn at random). The reference
classifier is the default route (a preset pretrained on the candidate texts, then a
classification head for `--epochs` epochs); the lowest-confidence ("hard") region should hold
the flipped examples: AUROC of minus the confidence with flipped = positive. Datasets: SST-2 as
re-split by ALPS (`sst2`, train.tsv: phrases and sentences, 2 classes) or AG News as used by ALPS
(`agnews`, test.tsv then dev.tsv descriptions, 4 classes).

    nice -n 10 python benchmarks/cartography.py --data /work/shared/data --dataset sst2 --n 8000
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from reference_common import auroc, ingest_records, meta_of, run_selector, single_threaded

from gristmill.selectors.cartography import CartographySelector

FILES = {"sst2": ["sst2_alps/train.tsv"], "agnews": ["agnews_alps/test.tsv", "agnews_alps/dev.tsv"]}


def read_tsv(data: Path, dataset: str) -> list[tuple[str, str]]:
    """(text, label) rows of the dataset's files (SST-2's have a header row)."""
    rows: list[tuple[str, str]] = []
    for name in FILES[dataset]:
        with open(data / name, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if dataset == "sst2":
                next(reader)
            rows.extend(
                (r[0].strip(), r[1].strip()) for r in reader if len(r) >= 2 and r[0].strip()
            )
    return rows


def flipped_records(rows: list[tuple[str, str]], n: int, flip: float, seed: int) -> list[dict]:
    """`n` random rows; `flip` of them relabelled with another class."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    classes = sorted({label for _, label in rows})
    records = [
        {"id": str(i), "text": rows[j][0], "label": rows[j][1], "flipped": False}
        for i, j in enumerate(chosen)
    ]
    for i in rng.choice(len(records), size=round(flip * len(records)), replace=False):
        others = [c for c in classes if c != records[i]["label"]]
        records[i]["label"] = others[int(rng.integers(len(others)))]
        records[i]["flipped"] = True
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--dataset", choices=sorted(FILES), default="sst2")
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--base-steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    single_threaded()

    records = flipped_records(read_tsv(args.data, args.dataset), args.n, args.flip, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ws = ingest_records(Path(tmp), records, args.dataset, "text")
        flipped = {d: bool(m["flipped"]) for d, m in meta_of(ws, args.dataset).items()}
        selector = CartographySelector.from_params(
            {"preset": args.preset, "base_steps": args.base_steps, "epochs": args.epochs,
             "region": "hard", "device": "cpu"}
        )  # fmt: skip
        signal, seconds = run_selector(ws, args.dataset, selector, "10%", "hard")
        start = time.perf_counter()
        again = CartographySelector.from_params({**selector.config_dict(), "region": "ambiguous"})
        run_selector(ws, args.dataset, again, "33%", "ambiguous")
        reselect = time.perf_counter() - start
        is_flipped = np.array([flipped[d] for d in signal["doc_id"].to_pylist()])
        confidence = signal["confidence"].to_numpy()
        hard_share = float(is_flipped[np.argsort(confidence)[: int(0.1 * len(confidence))]].mean())
        print(json.dumps({
            "dataset": args.dataset,
            "examples": signal.num_rows,
            "flipped": int(is_flipped.sum()),
            "auroc_flipped_by_low_confidence": round(auroc(-confidence, is_flipped), 4),
            "auroc_flipped_by_variability": round(
                auroc(signal["variability"].to_numpy(), is_flipped), 4),
            "flipped_share_of_hardest_10pct": round(hard_share, 4),
            "set_step_seconds": round(seconds, 1),
            "examples_per_second": round(signal.num_rows / seconds, 1),
            "reselect_seconds": round(reselect, 2),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
