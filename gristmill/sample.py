"""A sample corpus built offline from the Python standard library installed on this machine.

Prose documents come from stdlib docstrings (read with `ast`, nothing is imported), code
documents from stdlib function bodies, and planted junk, duplicates and broken records show
what quality filtering and the rejects ledger do. No data ships with gristmill or is downloaded.
"""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from pathlib import Path


def _docstring_documents(limit: int) -> list[tuple[str, str, str]]:
    """(module, prose, code) for stdlib modules with enough docstring text."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(stdlib.glob("*.py")):
        if path.name.startswith("_") or path.name in {"this.py", "antigravity.py"}:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        parts = [ast.get_docstring(tree) or ""]
        code = ""
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                parts.append(ast.get_docstring(node) or "")
                if not code and isinstance(node, ast.FunctionDef):
                    code = ast.get_source_segment(path.read_text(encoding="utf-8"), node) or ""
        prose = "\n\n".join(p for p in parts if p)
        if len(prose.split()) >= 60:
            found.append((path.stem, prose, code))
        if len(found) >= limit:
            break
    return found


def _junk(rng: random.Random, prose: list[str]) -> list[str]:
    """Documents the quality rules should drop, each for a different reason."""
    line = "Click here to subscribe to our newsletter!"
    words = " ".join(rng.sample(prose, 1)[0].split()[:40])
    return [
        "\n".join([line] * 30),  # repeated lines
        "# " * 200 + "sale sale sale",  # symbols
        "short note",  # too few words
        "\n".join(f"- item {i}" for i in range(80)),  # bullet list
        " ".join(["lorem", "ipsum", "dolor"] * 60),  # repeated n-grams
        "$$$ 4411 2233 9981 0000 " * 30,  # digits, no letters
        (words + " ") * 8,  # a paragraph repeated
    ]


def build_sample(directory: str | Path, n_modules: int = 200, seed: int = 0) -> dict[str, int]:
    """Write the sample corpus (JSONL, with a few broken records) to `directory`."""
    rng = random.Random(seed)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    modules = _docstring_documents(n_modules)
    prose = [text for _, text, _ in modules]
    records = [
        {
            "id": f"doc-{name}",
            "text": text,
            "domain": "python-docs",
            "url": f"https://docs.python.org/3/library/{name}.html",
        }
        for name, text, _ in modules
    ]
    records += [
        {"id": f"code-{name}", "text": code, "domain": "python-code"}
        for name, _, code in modules
        if code
    ]
    records += [
        {"id": f"junk-{i}", "text": t, "domain": "web-junk"}
        for i, t in enumerate(_junk(rng, prose))
    ]
    duplicates = rng.sample(records, min(10, len(records)))
    records += [{**r, "id": r["id"] + "-copy"} for r in duplicates]
    rng.shuffle(records)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    # Broken records, each kept in the rejects with its line and reason.
    lines.insert(5, '{"id": "broken-json", "text": "unterminated')
    lines.insert(9, json.dumps({"id": "no-text", "body": "this record names its text field wrong"}))
    lines.insert(13, json.dumps({"id": "empty", "text": "   "}))
    (out / "sample.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"records": len(lines), "broken": 3}
