"""The `url_filter` selector: keep or drop documents by domain lists and URL patterns.

Rules come from the config (lists) or from files of one rule per line (blank lines and lines
starting with '#' are skipped); nothing is downloaded. A file's rules with their file name and
line, not its directory, key the scores (`matched_rule` shows them): an edited list rescores, the
same file read from another directory does not.

- A domain rule matches the host and every subdomain of it: `example.com` matches example.com
  and news.example.com, not badexample.com. Case is ignored, as are a leading "*." or "." and a
  trailing dot.
- A URL rule is a glob over the whole URL, case-insensitive, where `*` also matches '/'
  (`*://ads.*/*`, `*/wp-login.php*`); a rule written `re:PATTERN` is a Python regular expression
  searched anywhere in the URL.
- The host is the URL's (from the `url` column, or the `url` key of `meta`; `url_field` names
  another) or, for a document without a URL, its `domain`. URL rules never match a document
  without a URL.
- A document is kept when no block rule matches it and, if any allow rule is given, an allow
  rule matches it: a block rule wins over an allow rule. The rule that decided is stored
  (`matched_rule`, with its file and line) and dropped documents carry it as their reason.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
import pyarrow as pa
from pydantic import Field

from gristmill.errors import InputError
from gristmill.selectors.base import Section, Selector, SelectorConfig, SelectorContext, Table
from gristmill.selectors.requirements import Requirement, Setting

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView

Action = Literal["block", "allow"]
Kind = Literal["domain", "url"]
LISTS: tuple[tuple[Action, Kind], ...] = (
    ("block", "domain"), ("block", "url"), ("allow", "domain"), ("allow", "url"),
)  # fmt: skip
DOMAIN = re.compile(r"^[\w-]+(?:\.[\w-]+)*$")
REGEX_PREFIX = "re:"


class UrlFilterConfig(SelectorConfig):
    """Domain lists and URL patterns to block or allow, given here or in files."""

    unkeyed_fields = frozenset(
        {"block_domains_file", "block_urls_file", "allow_domains_file", "allow_urls_file"}
    )

    block_domains: list[str] = Field(default_factory=list)
    block_urls: list[str] = Field(default_factory=list)
    allow_domains: list[str] = Field(default_factory=list)
    allow_urls: list[str] = Field(default_factory=list)
    block_domains_file: str | None = None
    block_urls_file: str | None = None
    allow_domains_file: str | None = None
    allow_urls_file: str | None = None
    url_field: str = Field("url", description="the column or meta key holding the URL")


@dataclass(frozen=True)
class Rule:
    """One rule: what it does, what it matches, as written, and where it was written."""

    action: Action
    kind: Kind
    text: str
    origin: str  # "params" or "<file>:<line>"

    @property
    def label(self) -> str:
        """How the rule shows as a reason: `block_domain:example.com`."""
        return f"{self.action}_{self.kind}:{self.text}"

    def describe(self) -> str:
        """The rule with where it came from, as stored in `matched_rule`."""
        return f"{self.label} ({self.origin})"


@dataclass
class RuleSet:
    """One action's rules, ready to match: domains by host suffix, then URL patterns."""

    domains: dict[str, Rule]
    patterns: list[tuple[re.Pattern[str], bool, Rule]]  # (compiled, is a regex search, rule)

    def __bool__(self) -> bool:
        return bool(self.domains or self.patterns)

    def match(self, host: str | None, url: str | None) -> Rule | None:
        """The first rule matching the host (most specific suffix first) or the URL."""
        if host:
            for suffix in _suffixes(host):
                rule = self.domains.get(suffix)
                if rule is not None:
                    return rule
        if url:
            for pattern, search, rule in self.patterns:
                if (pattern.search(url) if search else pattern.fullmatch(url)) is not None:
                    return rule
        return None


def _suffixes(host: str) -> Iterator[str]:
    """The host and each parent domain of it: a.b.c, b.c, c."""
    labels = host.split(".")
    for start in range(len(labels)):
        yield ".".join(labels[start:])


def normalize_domain(value: str) -> str:
    """A domain rule or host in the form rules compare: lower case, no wildcard or end dot."""
    domain = value.strip().lower().rstrip(".")
    for prefix in ("*.", "."):
        domain = domain.removeprefix(prefix)
    return domain


def host_of(url: str | None, domain: str | None) -> str | None:
    """The URL's host, or the document's domain when it has no URL."""
    if url:
        try:
            host = urlsplit(url.strip()).hostname
        except ValueError:  # an unparsable URL (bad IPv6 literal): fall back to the domain
            host = None
        if host:
            return normalize_domain(host)
    return normalize_domain(domain) if domain else None


def _compile(rule: Rule) -> tuple[re.Pattern[str], bool, Rule]:
    if rule.text.startswith(REGEX_PREFIX):
        try:
            return re.compile(rule.text[len(REGEX_PREFIX) :]), True, rule
        except re.error as error:
            raise InputError(
                f"url_filter: {rule.origin}: bad regular expression {rule.text!r}: {error}"
            ) from None
    return re.compile(fnmatch.translate(rule.text), re.IGNORECASE), False, rule


def _checked_domain(rule: Rule) -> Rule:
    domain = normalize_domain(rule.text)
    if not DOMAIN.match(domain):
        hint = " (a URL or pattern goes in the url rules)" if "/" in domain or "*" in domain else ""
        raise InputError(f"url_filter: {rule.origin}: {rule.text!r} is not a domain{hint}")
    return Rule(rule.action, rule.kind, domain, rule.origin)


def read_rules(path: str, action: Action, kind: Kind) -> list[Rule]:
    """Rules from a file of one per line; InputError naming the file for one it cannot read."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(
            f"url_filter: {file}: cannot read {action}_{kind}s rules ({reason})"
        ) from None
    return [
        Rule(action, kind, line.strip(), f"{file.name}:{number}")
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


class UrlFilterSelector(Selector):
    """Score 1.0 for documents the rules keep, 0.0 for those they drop, with the rule."""

    name: ClassVar[str] = "url_filter"
    version: ClassVar[str] = "1"
    Config = UrlFilterConfig
    default_mode = "threshold"
    default_threshold = 0.5

    config: UrlFilterConfig

    def __init__(self, config: SelectorConfig) -> None:
        super().__init__(config)
        self._rules: dict[Action, RuleSet] | None = None

    def rules(self) -> dict[Action, RuleSet]:
        """Every rule, read and checked once: InputError naming the file and line of a bad one."""
        if self._rules is None:
            config = self.config
            found: dict[Action, RuleSet] = {"block": RuleSet({}, []), "allow": RuleSet({}, [])}
            for action, kind in LISTS:
                listed = [
                    Rule(action, kind, t, "params") for t in getattr(config, f"{action}_{kind}s")
                ]
                path = getattr(config, f"{action}_{kind}s_file")
                if path is not None:
                    listed += read_rules(path, action, kind)
                target = found[action]
                for rule in listed:
                    if kind == "domain":
                        checked = _checked_domain(rule)
                        target.domains.setdefault(checked.text, checked)
                    else:
                        target.patterns.append(_compile(rule))
            self._rules = found
        return self._rules

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The rules read from files: their text and origin key the scores (the paths do not)."""
        rules = self.rules()
        from_files = sorted(
            rule.describe()
            for ruleset in rules.values()
            for rule in [*ruleset.domains.values(), *(r for _, _, r in ruleset.patterns)]
            if rule.origin != "params"
        )
        return [Setting("rule_files", from_files, stage="shard")] if from_files else []

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, score, reasons (the blocking rule, or not_allowed), matched_rule and host."""
        rules = self.rules()
        block, allow = rules["block"], rules["allow"]
        urls = _urls(documents, self.config.url_field)
        domains = documents["domain"].to_pylist()
        scores, reasons, matched, hosts = [], [], [], []
        for url, domain in zip(urls, domains, strict=True):
            host = host_of(url, domain)
            blocked = block.match(host, url) if block else None
            allowed = allow.match(host, url) if allow and blocked is None else None
            if blocked is not None:
                scores.append(0.0)
                reasons.append([blocked.label])
                matched.append(blocked.describe())
            elif allow and allowed is None:
                scores.append(0.0)
                reasons.append(["not_allowed"])
                matched.append(None)
            else:
                scores.append(1.0)
                reasons.append([])
                matched.append(allowed.describe() if allowed is not None else None)
            hosts.append(host)
        return pa.table(
            {
                "doc_id": documents["doc_id"],
                "score": pa.array(scores, pa.float64()),
                "reasons": pa.array(reasons, pa.list_(pa.string())),
                "matched_rule": pa.array(matched, pa.string()),
                "host": pa.array(hosts, pa.string()),
            }
        )

    def explain(self, view: SelectionView) -> list[Section]:
        """How many documents each rule decided, kept and dropped."""
        if "matched_rule" not in view.columns:
            return []
        found = view.rows(
            f"select coalesce(s.matched_rule, case when s.score = 0 then 'not_allowed' "
            f"else '(no rule)' end) as rule, count(*) as documents, "
            f"count(*) filter (where {view.kept}) as kept "
            f"from {view.candidates} join {view.signal} using (doc_id) "
            f"group by 1 order by documents desc, rule limit 50"
        )
        return [Section("rules", found, [Table("documents decided by each rule", found)])]


def _urls(documents: pa.Table, field: str) -> list[str | None]:
    """Each document's URL: its `field` column, else that key of its meta JSON."""
    if field in documents.column_names:
        return [None if v is None else str(v) for v in documents[field].to_pylist()]
    urls: list[str | None] = []
    for meta in documents["meta"].to_pylist():
        parsed = orjson.loads(meta) if meta else None
        value = parsed.get(field) if isinstance(parsed, dict) else None
        urls.append(value if isinstance(value, str) else None)
    return urls
