"""Planted check and speed of the `learnability` selector on Alpaca (alpaca_5000.json).

The first `--n` examples get noise: `--noise` of them have their response swapped with another
noisy example's (a derangement among the swapped ones), as many again get a random-text response
(words drawn from the set's own responses, the same length as the original). The base model is
the default route (a preset pretrained on the candidate responses); the score should rank clean
examples above noisy ones: AUROC of the score with clean = positive, overall and per noise kind.

    nice -n 10 python benchmarks/learnability.py --data /work/shared/data --n 2000 --methods lobass
    nice -n 10 python benchmarks/learnability.py --data /work/shared/data --n 2000 --methods rho
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from reference_common import auroc, ingest_records, meta_of, run_selector, single_threaded

from gristmill.selectors.learnability import LearnabilitySelector


def noisy_alpaca(data: Path, n: int, noise: float, seed: int) -> list[dict]:
    """Alpaca examples with `noise` swapped and `noise` random-text responses."""
    examples = json.loads((data / "alpaca_subset" / "alpaca_5000.json").read_text())[:n]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    k = round(noise * n)
    swapped, random_text = order[:k], order[k : 2 * k]
    words = " ".join(e["output"] for e in examples).split()
    records = [
        {"id": str(i), "instruction": e["instruction"], "input": e["input"], "output": e["output"],
         "noise": "clean"}
        for i, e in enumerate(examples)
    ]  # fmt: skip
    shifted = np.roll(swapped, 1)  # each swapped example gets the next one's response
    for target, source in zip(swapped, shifted, strict=True):
        records[target]["output"] = examples[source]["output"]
        records[target]["noise"] = "swapped"
    for target in random_text:
        length = max(3, len(examples[target]["output"].split()))
        records[target]["output"] = " ".join(rng.choice(words, length))
        records[target]["noise"] = "random"
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.1, help="share of each noise kind")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--base-steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--methods", default="lobass", help="lobass, rho or both (lobass,rho)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    single_threaded()

    records = noisy_alpaca(args.data, args.n, args.noise, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ws = ingest_records(Path(tmp), records, "alpaca", "output")
        noise = {d: m["noise"] for d, m in meta_of(ws, "alpaca").items()}
        for method in args.methods.split(","):
            selector = LearnabilitySelector.from_params(
                {"method": method, "preset": args.preset, "base_steps": args.base_steps,
                 "epochs": args.epochs, "device": "cpu"}
            )  # fmt: skip
            signal, seconds = run_selector(ws, "alpaca", selector, "50%", f"learn-{method}")
            start = time.perf_counter()
            run_selector(ws, "alpaca", selector.from_params({**selector.config_dict(),
                         "normalize": False}), "20%", f"learn-{method}-again")  # fmt: skip
            reselect = time.perf_counter() - start
            kinds = np.array([noise[d] for d in signal["doc_id"].to_pylist()])
            score = np.nan_to_num(signal["score"].to_numpy(), nan=-np.inf)
            result = {
                "method": method,
                "examples": signal.num_rows,
                "auroc_clean_vs_noise": round(auroc(score, kinds == "clean"), 4),
                "set_step_seconds": round(seconds, 1),
                "examples_per_second": round(signal.num_rows / seconds, 1),
                "reselect_seconds": round(reselect, 2),
            }
            for kind in ("swapped", "random"):
                keep = (kinds == "clean") | (kinds == kind)
                result[f"auroc_clean_vs_{kind}"] = round(
                    auroc(score[keep], kinds[keep] == "clean"), 4
                )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
