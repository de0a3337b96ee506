"""Same selections, member for member: digest every selection a recipe makes, and compare.

Runs a recipe (default: `equivalence.yaml`, the effect study's selection steps that train
nothing) in a fresh workspace and prints, per selection, the member count and an xxh3 digest
of (doc_id, rank) in rank order. Run it on two commits and compare the JSON:

    python examples/study/build_data.py                  # the study data, once
    python benchmarks/selection_digest.py --out after.json
    python benchmarks/selection_digest.py --compare before.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import xxhash

HERE = Path(__file__).resolve().parent


def digests(workspace: Path) -> dict[str, list]:
    """Per selection of a workspace: [members, xxh3 of (doc_id, rank) in rank order]."""
    found: dict[str, list] = {}
    with duckdb.connect(str(workspace / "catalog.duckdb"), read_only=True) as con:
        names = [
            name for (name,) in con.execute("select name from selections order by 1").fetchall()
        ]
    for name in names:
        members = workspace / "selections" / name / "members.parquet"
        rows = duckdb.execute(
            "select doc_id, rank from read_parquet(?) order by rank, doc_id", [str(members)]
        ).fetchall()
        found[name] = [len(rows), xxhash.xxh3_64_hexdigest(json.dumps(rows).encode())]
    return found


def main() -> None:
    """Run the recipe in a temporary workspace; print or compare the digests."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=HERE / "equivalence.yaml")
    parser.add_argument("--out", type=Path, help="write the digests to this JSON file")
    parser.add_argument("--compare", type=Path, help="exit 1 unless equal to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(scratch) / "ws"
        command = [sys.executable, "-m", "gristmill.cli", "run", str(args.recipe), "-w",
                   str(workspace)]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        found = digests(workspace)
    text = json.dumps(found, indent=1, sort_keys=True)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.compare:
        expected = json.loads(args.compare.read_text(encoding="utf-8"))
        differ = sorted(
            k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
        )
        print("identical" if not differ else f"differ: {', '.join(differ)}")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
