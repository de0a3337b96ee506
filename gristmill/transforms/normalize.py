"""The `normalize` transform: Unicode and mojibake repair with ftfy, then a normal form.

ftfy (METHODS.md: mojibake, HTML entities, curly quotes, then NFC) with its own defaults, except
what the config changes, line by line as `ftfy.fix_text` does (the same output: HTML entities are
left alone from the first line with a '<' on, under "auto"). A line of printable ASCII with no
'&' has nothing any of these fixes changes and is passed over, which makes typical web text
several times faster. The change record counts each fix applied by its name (`fix_encoding`
for any re-decoding of mojibake, `normalization` for the normal form) and `changed` when the
text differs.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import ftfy

from gristmill.transforms.base import Rewrite, Transform, TransformConfig

ENCODING_STEPS = frozenset({"encode", "decode", "transcode"})
# Characters some fix acts on in ASCII text: entities, escapes, control characters and \r.
ASCII_FIXABLE = re.compile(r"[&\x00-\x08\x0b-\x1f\x7f]")


class NormalizeConfig(TransformConfig):
    """Which of ftfy's fixes run, and the Unicode normal form (None: leave it)."""

    fix_encoding: bool = True
    unescape_html: bool | Literal["auto"] = "auto"
    uncurl_quotes: bool = True
    fix_latin_ligatures: bool = True
    fix_character_width: bool = True
    fix_line_breaks: bool = True
    remove_control_chars: bool = True
    normalization: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = "NFC"


class NormalizeTransform(Transform):
    """Repair mojibake and other Unicode damage; normalise to one form."""

    name: ClassVar[str] = "normalize"
    version: ClassVar[str] = f"1 (ftfy {ftfy.__version__})"  # another ftfy may fix differently
    Config = NormalizeConfig

    config: NormalizeConfig

    def __init__(self, config: NormalizeConfig) -> None:
        super().__init__(config)
        self._fixer = ftfy.TextFixerConfig(**config.model_dump(), explain=True)

    def apply(self, text: str, domain: str) -> Rewrite:
        """The repaired text; counts per fix applied, and `changed`."""
        fixer = self._fixer
        out: list[str] = []
        changes: dict[str, int] = {}
        position = 0
        while position < len(text):
            end = text.find("\n", position) + 1 or len(text)
            end = min(end, position + fixer.max_decode_length)
            segment = text[position:end]
            position = end
            if fixer.unescape_html == "auto" and "<" in segment:
                fixer = fixer._replace(unescape_html=False)
            if segment.isascii() and not ASCII_FIXABLE.search(segment):
                out.append(segment)
                continue
            fixed, steps = ftfy.fix_and_explain(segment, config=fixer)
            out.append(fixed)
            for action, name in steps or []:
                key = "fix_encoding" if action in ENCODING_STEPS else name
                changes["normalization" if action == "normalize" else key] = 1
        result = "".join(out)
        if result != text:
            changes["changed"] = 1
        return Rewrite(result, changes)
