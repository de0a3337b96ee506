"""The `pii` transform: mask e-mail addresses, IP addresses and phone numbers with tokens.

Rules (METHODS.md, after datatrove's PIIFormatter and BigScience):
- E-mail: an ASCII local part, '@', and a dotted host ending in a letters-only top-level label.
- IP: dotted quads and colon-hex groups, each candidate validated by `ipaddress`; by default only
  public unicast addresses are masked, so 10.x, 192.168.x, ::1, multicast (ff02::1, 224.0.0.251)
  and the documentation ranges stay. A dotted quad inside a longer dotted run (1.2.3.4.5), glued
  to a word (v1.2.3.4), right after "version", "release", "build" or "ver", or opening a line
  and followed by a '.' ("12.6.2.1. Compiling", a section number) is kept: such strings are far
  more often versions and section numbers than addresses. An IPv6 candidate needs two non-empty
  groups ("::2" in a[::2] is a slice).
- Phone: international numbers (+ and a country code, 8 to 15 digits in groups) and North
  American numbers written with separators ((555) 123-4567, 555-123-4567, 555.123.4567). A bare
  run of digits and national formats without a country code are left alone: too many of them are
  ids, prices or dates.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import ClassVar

from pydantic import Field

from gristmill.transforms.base import Rewrite, Transform, TransformConfig

EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
IPV4 = re.compile(r"(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?![\w-])(?!\.\d)")
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:])"
)
PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?![\w-])")
PHONE_NORTH_AMERICA = re.compile(
    r"(?<![\w(.-])(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])(?!\.\d)"
)
SECTION_START = re.compile(r"(?:^|\n)[ \t]*$")
VERSION_BEFORE = re.compile(r"\b(?:version|release|build|ver\.?)\s*$", re.IGNORECASE)


class PiiConfig(TransformConfig):
    """What the pii transform masks and with which tokens."""

    emails: bool = True
    ips: bool = True
    phones: bool = True
    public_ips_only: bool = Field(True, description="mask only globally routable addresses")
    email_token: str = "<EMAIL>"
    ip_token: str = "<IP>"
    phone_token: str = "<PHONE>"


class PiiTransform(Transform):
    """Replace each e-mail address, IP address and phone number with a fixed token."""

    name: ClassVar[str] = "pii"
    version: ClassVar[str] = "1"
    Config = PiiConfig

    config: PiiConfig

    def apply(self, text: str, domain: str) -> Rewrite:
        """The text with PII masked; counts per kind (email, ipv4, ipv6, phone)."""
        config = self.config
        changes: dict[str, int] = {}
        if config.emails and "@" in text:
            text = _substitute(EMAIL, text, lambda m: config.email_token, "email", changes)
        if config.ips:
            if ":" in text:
                text = _substitute(IPV6, text, self._ipv6, "ipv6", changes)
            if "." in text:
                text = _substitute(IPV4, text, self._ipv4, "ipv4", changes)
        if config.phones:
            if "+" in text:
                text = _substitute(PHONE_INTERNATIONAL, text, self._phone, "phone", changes)
            text = _substitute(PHONE_NORTH_AMERICA, text, self._phone, "phone", changes)
        return Rewrite(text, changes)

    def _ipv4(self, match: re.Match[str]) -> str | None:
        text, start = match.string, match.start()
        if VERSION_BEFORE.search(text, max(0, start - 12), start):
            return None
        opens_line = SECTION_START.search(text, max(0, start - 8), start) is not None
        if opens_line and text.startswith(".", match.end()):
            return None
        try:
            address = ipaddress.IPv4Address(match.group())
        except ValueError:  # an octet over 255 or with a leading zero
            return None
        return self._masked(address)

    def _ipv6(self, match: re.Match[str]) -> str | None:
        candidate = match.group()
        if sum(bool(group) for group in candidate.split(":")) < 2:  # "::", "::2"
            return None
        try:
            address = ipaddress.IPv6Address(candidate)
        except ValueError:  # times (12:30:45), too many groups, two "::"
            return None
        return self._masked(address)

    def _masked(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        public = address.is_global and not (address.is_multicast or address.is_reserved)
        if self.config.public_ips_only and not public:
            return None
        return self.config.ip_token

    def _phone(self, match: re.Match[str]) -> str | None:
        digits = sum(c.isdigit() for c in match.group())
        low = 10 if match.re is PHONE_NORTH_AMERICA else 8
        return self.config.phone_token if low <= digits <= 15 else None


def _substitute(
    pattern: re.Pattern[str],
    text: str,
    replacement: Callable[[re.Match[str]], str | None],
    kind: str,
    changes: dict[str, int],
) -> str:
    """`text` with each match `replacement` accepts (None keeps it) replaced, counted."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        token = replacement(match)
        if token is None:
            return match.group()
        count += 1
        return token

    result = pattern.sub(replace, text)
    if count:
        changes[kind] = changes.get(kind, 0) + count
    return result
