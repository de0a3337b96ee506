"""Tokenization speed: gristmill's token export against datatrove and `datasets.map`, same run.

Data: the IMDB test split (../shared/data, 25,000 reviews) repeated to --docs documents (100,000
by default; the copies are separate files, so separate documents), ingested into a workspace and
selected whole (a selection ranked by the `quality` selector, no budget), and half of it; and
the 25,000 reviews once (`once`: no document repeats, so gristmill's word cache starts cold and
meets each review once). Each selection is materialised as Parquet, and that file is the
input of datatrove's `ParquetReader` ->
`DocumentTokenizer` (unshuffled, as gristmill's rank order) and of `datasets.Dataset.map`
(batched, the fast tokenizer); gristmill's `export_tokens` reads the workspace. Tokenizer: a
byte-level BPE (`training.models.train_tokenizer`, --vocab) trained on the first 5,000 reviews;
nothing downloaded.

Each measurement runs in a fresh process: wall seconds, CPU seconds (user + system; the
tokenizers library uses every core), tokens per CPU second (= tokens/s per core), and the
process's peak RSS. The full size and half of it are measured, so a peak that grows with the
selection shows. Also measured: gristmill with the tokenizer's thread pool at one thread
(`gristmill-1thread`), and `tokenizers` alone (`encode_batch_fast` over the texts in memory,
batches of 1,000): the encoder every tool calls, which is the floor for datatrove and
`datasets.map`.

    .venv/bin/python benchmarks/token_export.py [--docs 100000] [--vocab 8192] [--data DIR]

(Not named tokenize.py: in benchmarks/ that name would hide the standard library's `tokenize`
from every other script there.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("GRISTMILL_DATA", "/work/shared/data"))
# gristmill-1thread: the same export with the tokenizer's thread pool at one thread
# (RAYON_NUM_THREADS=1), to show what the pool's threads cost per CPU second.
TOOLS = ("gristmill", "gristmill-1thread", "datatrove", "datasets", "tokenizers")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_tool(tool: str, work: Path, selection: str, size: int) -> dict:
    """Tokenize one selection with one tool in this process; the figures of the run."""
    tokenizer_dir = work / "tokenizer"
    parquet = work / f"{selection}.parquet" / "data.parquet"
    out = work / f"out-{tool}-{selection}"
    # Imports are a fixed cost, the same at any size: outside the timed part.
    import datasets
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from transformers import AutoTokenizer

    from gristmill.pipeline.tokens import TokenizeOptions, export_tokens

    texts = None
    if tool == "tokenizers":  # the encoder alone, on texts already in memory: every tool's floor
        import pyarrow.parquet as pq
        from tokenizers import Tokenizer

        texts = pq.read_table(parquet, columns=["text"])["text"].to_pylist()
        backend = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    started, cpu = time.perf_counter(), _cpu()
    if tool == "tokenizers":
        tokens = 0
        for start in range(0, len(texts), 1000):
            encoded = backend.encode_batch_fast(
                texts[start : start + 1000], add_special_tokens=False
            )
            tokens += sum(len(e.ids) + 1 for e in encoded)  # + EOS, as the others
    elif tool.startswith("gristmill"):
        result = export_tokens(work / "ws", selection, out, TokenizeOptions(str(tokenizer_dir)))
        tokens = result["tokens"]
    elif tool == "datatrove":
        reader = ParquetReader(str(parquet.parent), glob_pattern="data.parquet")
        writer = DocumentTokenizer(
            str(out), str(tokenizer_dir / "tokenizer.json"), eos_token="<|endoftext|>",
            shuffle_documents=False,
        )  # fmt: skip
        logs = str(work / f"logs-{selection}")
        LocalPipelineExecutor(pipeline=[reader, writer], tasks=1, logging_dir=logs).run()
        tokens = sum(f.stat().st_size for f in out.glob("*.ds")) // 2  # uint16 ids
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        dataset = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(out))
        encoded = dataset.map(
            lambda batch: tokenizer(batch["text"], add_special_tokens=False),
            batched=True, batch_size=1000, remove_columns=dataset.column_names,
            cache_file_name=str(out / "tokens.arrow"),
        )  # fmt: skip
        tokens = sum(len(ids) + 1 for ids in encoded["input_ids"])  # + EOS, as the others
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    return {"tool": tool, "documents": size, "tokens": tokens, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "tokens_per_s": round(tokens / wall),
            "tokens_per_cpu_s": round(tokens / cpu), "peak_rss_mib": _peak_mib()}  # fmt: skip


def _peak_mib() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not carried over from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return -1


def prepare(work: Path, docs: int, vocab: int) -> list[tuple[str, int]]:
    """The workspace, its two selections (all and half), their Parquet copies, the tokenizer."""
    from gristmill import pipeline
    from gristmill.training.models import train_tokenizer

    texts = []
    with open(DATA / "imdb_test" / "imdb_test.jsonl", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    train_tokenizer(texts[:5000], vocab).save_pretrained(work / "tokenizer")
    raw = work / "raw"
    raw.mkdir()
    paths, written = [], 0
    for copy in range((docs + len(texts) - 1) // len(texts)):
        part = texts[: docs - written]
        path = raw / f"imdb-{copy}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in part), encoding="utf-8")
        paths.append(str(path))
        written += len(part)
    pipeline.ingest(work / "ws", paths, "imdb")
    pipeline.ingest(work / "ws", paths[:1], "imdb-once")
    sizes = []
    selections = (("all", "imdb", None), ("half", "imdb", f"{docs // 2}docs"),
                  ("once", "imdb-once", None))  # fmt: skip
    for name, corpus, budget in selections:
        record = pipeline.curate(work / "ws", corpus, "quality", budget=budget, name=name).record
        pipeline.materialize(work / "ws", name, str(work / f"{name}.parquet"))
        sizes.append((name, record["n_selected"]))
    return sizes


def main() -> None:
    """Prepare the data, then run every tool at both sizes, each in a fresh process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--work", help="keep the prepared data in this folder (reused if there)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--selections", nargs="+", choices=("all", "half", "once"),
                        default=["all", "half", "once"])  # fmt: skip
    parser.add_argument("--worker", nargs=4, metavar=("TOOL", "WORK", "SELECTION", "SIZE"))
    args = parser.parse_args()
    if args.worker:
        tool, work, selection, size = args.worker
        print(json.dumps(run_tool(tool, Path(work), selection, int(size))))
        return
    with tempfile.TemporaryDirectory(prefix="gristmill-tokenize-") as tmp:
        work = Path(args.work or tmp)
        started = time.perf_counter()
        prepared = work / "sizes.json"
        if prepared.exists():
            sizes = [tuple(s) for s in json.loads(prepared.read_text())]
        else:
            work.mkdir(parents=True, exist_ok=True)
            sizes = prepare(work, args.docs, args.vocab)
            prepared.write_text(json.dumps(sizes))
        print(f"prepared {sizes} in {time.perf_counter() - started:.0f}s on {os.cpu_count()} "
              "cores", flush=True)  # fmt: skip
        results = []
        sizes = [(name, size) for name, size in sizes if name in args.selections]
        for selection, size in sizes:
            for tool in args.tools:
                # datatrove skips the tasks its logs say are done: both go, for a fresh run.
                for stale in (f"out-{tool}-{selection}", f"logs-{selection}"):
                    shutil.rmtree(work / stale, ignore_errors=True)
                command = [sys.executable, __file__, "--worker", tool, str(work), selection,
                           str(size)]  # fmt: skip
                env = {**os.environ, **({"RAYON_NUM_THREADS": "1"} if "1thread" in tool else {})}
                line = subprocess.run(
                    command, check=True, capture_output=True, text=True, env=env
                ).stdout
                results.append({**json.loads(line.strip().splitlines()[-1]),
                                "load_1min": round(os.getloadavg()[0], 1)})  # fmt: skip
                print(json.dumps(results[-1]), flush=True)
        for _, size in sizes:
            mine = {r["tool"]: r for r in results if r["documents"] == size}
            for tool in sorted(set(mine) - {"datatrove"} if "datatrove" in mine else ()):
                ratio = mine[tool]["tokens_per_cpu_s"] / mine["datatrove"]["tokens_per_cpu_s"]
                wall = mine[tool]["tokens_per_s"] / mine["datatrove"]["tokens_per_s"]
                print(f"{size} documents: {tool} / datatrove: tokens per CPU second {ratio:.2f}x, "
                      f"tokens per wall second {wall:.2f}x")  # fmt: skip
        print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
