"""A plug-in selector's own explanation reaches `inspect` (JSON and text) with no change to
storage or the CLI: the selector is registered through the entry-point group like any plug-in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import good_text, write_jsonl
from typer.testing import CliRunner

from gristmill.cli import app
from gristmill.pipeline.inspection import inspect_selection
from gristmill.selectors import available
from gristmill.selectors.base import Section, Selector, Table
from gristmill.storage.queries import SelectionView
from gristmill.storage.workspace import Workspace

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


class LongestTextSelector(Selector):
    """Keeps the longest documents (a test plug-in)."""

    name: ClassVar[str] = "test_longest_text"

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id and the text length as score; the shard's longest three in the report."""
        lengths = pc.utf8_length(documents["text"]).cast(pa.float64())
        order = pc.sort_indices(lengths, sort_keys=[("", "descending")])[:3]
        longest = [{"doc_id": documents["doc_id"][i].as_py(), "length": lengths[i].as_py()}
                   for i in order.to_pylist()]  # fmt: skip
        report = {"measure": "characters", "longest": longest}
        table = pa.table({"doc_id": documents["doc_id"], "score": lengths})
        return table.replace_schema_metadata({"gristmill": json.dumps(report)})

    def explain(self, view: SelectionView) -> list[Section]:
        """Documents kept and mean length per domain, and the report's longest documents."""
        per_domain = view.rows(
            f"select d.domain, count(*) filter ({view.kept}) as kept, avg(s.score) as mean_length "
            f"from {view.candidates} join {view.signal} using (doc_id) "
            f"group by d.domain order by d.domain"
        )
        tables = [Table("length by domain", per_domain),
                  Table("longest in the first shard", view.report["longest"])]  # fmt: skip
        return [Section("length_by_domain", per_domain, tables, shows=("longest",))]


class ClashingSelector(LongestTextSelector):
    """Explains under a key `inspect` already uses (a test plug-in)."""

    name: ClassVar[str] = "test_clashing"

    def explain(self, view: SelectionView) -> list[Section]:
        """A section named like the kept sample."""
        return [Section("kept", [], [])]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both test selectors installed as an entry-point plug-in distribution."""
    dist = tmp_path / "plugins" / "gm_test_plugins-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gm-test-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[gristmill.selectors]\n"
        f"test_longest_text = {__name__}:LongestTextSelector\n"
        f"test_clashing = {__name__}:ClashingSelector\n"
    )
    monkeypatch.syspath_prepend(str(dist.parent))


def cli(*args: str) -> str:
    """Run the CLI in-process, check it succeeded; returns stdout."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_a_plugin_selectors_sections_show_in_inspect(plugins: None, tmp_path: Path) -> None:
    assert {"test_longest_text", "test_clashing"} <= set(available())
    records = [
        {"text": good_text(i) + " more words" * (i % 7), "site": f"https://{site}.example.org/"}
        for i, site in enumerate(["alpha", "beta"] * 15)
    ]
    path = write_jsonl(tmp_path / "pool.jsonl", records)
    ws = str(tmp_path / "ws")
    cli("ingest", str(path), "--corpus", "pool", "--url-field", "site", "-w", ws)
    cli("select", "pool", "--selector", "test_longest_text", "--budget", "10docs",
        "--name", "long", "-w", ws)  # fmt: skip

    shown = json.loads(cli("inspect", "long", "-w", ws, "--json"))
    record_kept = {d["domain"]: d["kept"] for d in shown["selection"]["summary"]["domains"]}
    assert {r["domain"]: r["kept"] for r in shown["length_by_domain"]} == record_kept
    assert sum(record_kept.values()) == 10
    (section,) = shown["sections"]
    assert section["key"] == "length_by_domain" and section["shows"] == ["longest"]
    assert [t["title"] for t in section["tables"]] == ["length by domain",
                                                       "longest in the first shard"]  # fmt: skip
    assert "clusters" not in shown and "regions" not in shown

    text = cli("inspect", "long", "-w", ws)
    assert "length by domain" in text and "longest in the first shard" in text
    assert "alpha.example.org" in text and "mean_length" in text
    scoring_line = next(line for line in text.splitlines() if line.startswith("scoring:"))
    assert json.loads(scoring_line.removeprefix("scoring: ")) == {"measure": "characters"}

    cli("select", "pool", "--selector", "test_clashing", "--budget", "10docs",
        "--name", "clash", "-w", ws)  # fmt: skip
    with pytest.raises(RuntimeError, match="test_clashing: explain section 'kept' clashes"):
        inspect_selection(Workspace(ws), "clash")
