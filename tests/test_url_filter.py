"""The url_filter selector: domain lists (subdomains included) and URL patterns, from params or
rule files, with the deciding rule recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import good_text, write_jsonl

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.selectors import registry
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

URLS = [
    "https://example.com/a",
    "http://news.example.com/b",
    "https://badexample.com/c",
    "https://EXAMPLE.org/wp-login.php?x=1",
    "https://blog.site.net/2024/01/post.html",
    "https://shop.site.net/cart",
    None,  # no URL: the domain column decides the host
]
DOMAINS = ["x", "x", "x", "x", "x", "x", "tracker.ads.net"]


def _documents() -> pa.Table:
    metas = [json.dumps({"url": u} if u else {}) for u in URLS]
    return pa.table(
        {
            "doc_id": pa.array(range(len(URLS)), pa.uint64()),
            "text": [f"text {i}" for i in range(len(URLS))],
            "domain": DOMAINS,
            "meta": metas,
        }
    )


def _score(**params: object) -> list[dict]:
    selector = registry.get("url_filter").from_params(params)
    return selector.score(_documents()).to_pylist()


def test_a_domain_rule_matches_the_host_and_its_subdomains_only() -> None:
    rows = _score(block_domains=["*.Example.com.", "ads.net"])
    assert [r["score"] for r in rows] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert rows[1]["reasons"] == ["block_domain:example.com"]
    assert rows[1]["matched_rule"] == "block_domain:example.com (params)"
    assert rows[1]["host"] == "news.example.com" and rows[6]["host"] == "tracker.ads.net"


def test_url_rules_are_case_insensitive_globs_or_regexes() -> None:
    rows = _score(block_urls=["*/wp-login.php*", r"re:/\d{4}/\d{2}/"])
    assert [r["score"] for r in rows] == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert rows[4]["reasons"] == [r"block_url:re:/\d{4}/\d{2}/"]


def test_allow_rules_keep_only_what_they_match_and_a_block_rule_wins() -> None:
    rows = _score(allow_domains=["site.net", "example.com"], block_urls=["*/cart"])
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert rows[2]["reasons"] == ["not_allowed"] and rows[2]["matched_rule"] is None
    assert rows[5]["reasons"] == ["block_url:*/cart"]
    assert rows[4]["matched_rule"] == "allow_domain:site.net (params)"


def test_rule_files_name_the_line_of_the_rule_that_decided(tmp_path: Path) -> None:
    rules = tmp_path / "block.txt"
    rules.write_text("# ad networks\n\nads.net\n  example.com  \n", encoding="utf-8")
    rows = _score(block_domains_file=str(rules))
    assert rows[0]["matched_rule"] == "block_domain:example.com (block.txt:4)"
    assert rows[6]["matched_rule"] == "block_domain:ads.net (block.txt:3)"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"block_urls": ["re:(unclosed"]}, r"params: bad regular expression 're:\(unclosed'"),
        ({"block_domains": ["https://example.com/x"]}, "not a domain .a URL or pattern"),
        ({"block_domains_file": "/nonexistent/rules.txt"}, "rules.txt: cannot read"),
        ({"block_domain": ["x.com"]}, "url_filter: block_domain"),
    ],
)
def test_bad_rules_are_refused_with_where_they_are(params: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        _score(**params)


def test_a_bad_rule_in_a_file_names_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "urls.txt"
    rules.write_text("*/ok/*\nre:[z-a]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"urls.txt:2: bad regular expression"):
        _score(block_urls_file=str(rules))


def _web(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    hosts = ["example.com", "news.example.com", "good.org", "spam.biz"]
    records = [
        {"text": good_text(i), "url": f"https://{hosts[i % 4]}/page/{i}", "site": hosts[i % 4]}
        for i in range(12)
    ]
    path = write_jsonl(tmp_path / "raw.jsonl", records)
    pipeline.ingest(ws, [str(path)], "web", IngestOptions(domain_field="site"))
    return ws


def test_a_selection_records_the_rules_and_rescores_when_a_rule_file_changes(
    tmp_path: Path,
) -> None:
    ws = _web(tmp_path)
    rules = tmp_path / "block.txt"
    rules.write_text("example.com\n", encoding="utf-8")
    params = {"block_domains_file": str(rules), "block_urls": ["*spam.biz/*"]}
    curation = pipeline.curate(ws, "web", "url_filter", params=params, name="filtered")
    assert curation.record is not None and curation.record["n_selected"] == 3
    reasons = dict(curation.record["summary"]["top_reasons"])
    assert reasons == {"block_domain:example.com": 6, "block_url:*spam.biz/*": 3}
    shown = pipeline.inspect_selection(ws, "filtered")
    assert {r["rule"]: r["documents"] for r in shown["rules"]} == {
        "block_domain:example.com (block.txt:1)": 6, "block_url:*spam.biz/* (params)": 3,
        "(no rule)": 3,
    }  # fmt: skip
    # The same file in another directory: nothing to rescore. Other rules: every shard rescored.
    moved = tmp_path / "elsewhere" / "block.txt"
    moved.parent.mkdir()
    moved.write_text("example.com\n", encoding="utf-8")
    params["block_domains_file"] = str(moved)
    again = pipeline.curate(ws, "web", "url_filter", params=params)
    assert (again.scored, again.plan.config_hash) == (0, curation.plan.config_hash)
    moved.write_text("news.example.com\n", encoding="utf-8")
    edited = pipeline.curate(ws, "web", "url_filter", params=params)
    assert edited.scored == 1 and edited.plan.config_hash != curation.plan.config_hash
