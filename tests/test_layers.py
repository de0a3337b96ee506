"""Layering, checked on the source: nothing below flows imports Prefect, and storage and the CLI
name no selector and no selector's signal column (each selector explains itself to `inspect`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gristmill.selectors import available

PACKAGE = Path(__file__).resolve().parents[1] / "gristmill"
# Everything `cli -> flows -> {selectors, training} -> storage` puts below the flows.
BELOW_FLOWS = ["storage", "selectors", "training", "pipeline", "transforms", "recipe.py",
               "errors.py", "progress.py", "devices.py", "server.py",
               "console_progress.py"]  # fmt: skip
# Columns only one selector writes and reads (the generic `score` and `reasons` are not here, nor
# perplexity_correlation's `domain_weight`: --domain-weight is every selection's quota option).
SELECTOR_COLUMNS = {"confidence", "variability", "correctness", "loss_base", "loss_ref",
                    "duplicate_of", "cluster"}  # fmt: skip
# Selector names that are also ordinary words, allowed in prose (help texts, messages).
ENGLISH_SELECTOR_NAMES = {"language"}
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def sources(*names: str) -> list[Path]:
    """The .py files of the named packages and modules under gristmill/ that exist."""
    found = []
    for name in names:
        path = PACKAGE / name
        assert path.exists(), f"{path} is gone: update the layer lists"
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an import statement names (at any depth: lazy imports count)."""
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def words(tree: ast.AST) -> set[str]:
    """Identifiers (names, attributes, arguments, definitions) and the words of string literals."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.arg | ast.keyword) and node.arg:
            found.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.alias):
            found.update((node.asname or node.name).split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            string_words = set(WORD.findall(node.value))
            if " " in node.value.strip():  # prose may use a selector name that is an English word
                string_words -= ENGLISH_SELECTOR_NAMES
            found.update(string_words)
    return found


def test_the_checks_see_lazy_imports_sql_words_and_identifiers() -> None:
    planted = ast.parse(
        "def f(cluster):\n"
        "    import prefect.tasks\n"
        "    return f'select s.loss_ref from t', x.dedup\n"
    )
    assert "prefect.tasks" in imported_modules(planted)
    assert {"cluster", "loss_ref", "dedup"} <= words(planted)


@pytest.mark.parametrize("path", sources(*BELOW_FLOWS), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_below_flows_imports_prefect(path: Path) -> None:
    modules = imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    prefect = {m for m in modules if m == "prefect" or m.startswith("prefect.")}
    assert not prefect, f"{path.name} imports {sorted(prefect)}"


@pytest.mark.parametrize(
    "path", [*sources("storage"), PACKAGE / "cli.py"], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_storage_and_cli_name_no_selector_and_no_selector_column(path: Path) -> None:
    forbidden = set(available()) | SELECTOR_COLUMNS
    named = words(ast.parse(path.read_text(encoding="utf-8"))) & forbidden
    assert not named, f"{path.name} names {sorted(named)}"


@pytest.mark.parametrize("path", sources("storage"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_storage_imports_nothing_above_it(path: Path) -> None:
    above = ("gristmill.selectors", "gristmill.pipeline", "gristmill.flows")
    modules = imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    reaching_up = {m for m in modules for a in above if m == a or m.startswith(f"{a}.")}
    assert not reaching_up, f"{path.name} imports {sorted(reaching_up)}"
