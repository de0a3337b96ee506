"""HTML pages to text: the charset (HTTP header, then <meta>, then detection) and main text.

Two maintained extractors: trafilatura (the default; what FineWeb and datatrove use, keeps
tables, drops navigation and tables of contents) and Resiliparse's html2text (much faster,
keeps code blocks too, but drops tables). Both are deterministic here: trafilatura's
`deduplicate` would remember text across pages, so a page's text would depend on the pages
read before it in the same process (and so on chunking and resumes).
"""

from __future__ import annotations

import codecs
import re
from typing import Literal

ExtractorName = Literal["trafilatura", "resiliparse"]

# A <meta charset=...> or <meta http-equiv content="...; charset=..."> in the head.
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_META_WINDOW = 4096  # browsers pre-scan the first 1024 bytes; some pages put it a bit later


_UTF16_32_BOMS = (
    codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE,
)  # fmt: skip


class Undecodable(ValueError):
    """A page whose bytes decode with none of its declared or detected charsets."""


def _codec(label: str | None) -> str | None:
    """Python's codec name for a charset label, or None for an unknown one."""
    if not label:
        return None
    try:
        return codecs.lookup(label.strip().strip("\"'")).name
    except LookupError:
        return None


def meta_charset(body: bytes) -> str | None:
    """The charset a page declares in a <meta> tag near its start."""
    found = _META_CHARSET.search(body, 0, _META_WINDOW)
    return found.group(1).decode("ascii", "replace") if found else None


def decode_html(body: bytes, header_charset: str | None) -> tuple[str, str, str]:
    """(text, codec, where it came from: http, meta or detected); Undecodable if none fits."""
    if b"\x00" in body and not body.startswith(_UTF16_32_BOMS):
        # Text in an 8-bit charset or UTF-8 has no NUL; a detector would call it UTF-16
        raise Undecodable("binary payload (NUL bytes, no UTF-16/32 byte order mark)")
    tried: list[str] = []
    codecs_tried: set[str] = set()
    for origin, label in (("http", header_charset), ("meta", meta_charset(body))):
        codec = _codec(label)
        if label and codec is None:
            tried.append(f"unknown {origin} charset {label!r}")
        if codec is None or codec in codecs_tried:
            continue
        codecs_tried.add(codec)
        try:
            return body.decode(codec), codec, origin
        except UnicodeDecodeError as error:
            tried.append(f"{origin} charset {codec}: {error}")
    from charset_normalizer import from_bytes

    best = from_bytes(body).best()
    if best is not None:
        codec = _codec(best.encoding)
        if codec is not None:
            try:
                return body.decode(codec), codec, "detected"
            except UnicodeDecodeError as error:
                tried.append(f"detected charset {codec}: {error}")
    raise Undecodable("; ".join(tried) or "no charset declared and none detected")


def main_text(html: str, extractor: ExtractorName) -> str:
    """The main text of a page ("" when the extractor finds none)."""
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True).strip()
    import trafilatura

    text = trafilatura.extract(
        html, favor_precision=True, include_comments=False, deduplicate=False
    )  # datatrove's settings but deduplicate (see the module docstring)
    return (text or "").strip()
