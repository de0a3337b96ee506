"""The `normalize` transform: Unicode and mojibake repair with ftfy, then a normal form.

ftfy's `fix_and_explain` (METHODS.md: mojibake, HTML entities, curly quotes, then NFC) with its
own defaults, except what the config changes. The change record counts each fix ftfy applied by
its name (`fix_encoding` for any re-decoding of mojibake, `normalization` for the
normal form) and `changed` when the text differs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import ftfy

from gristmill.transforms.base import Rewrite, Transform, TransformConfig

ENCODING_STEPS = frozenset({"encode", "decode", "transcode"})


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
        fixed, steps = ftfy.fix_and_explain(text, config=self._fixer)
        changes: dict[str, int] = {}
        for action, name in steps or []:
            key = "fix_encoding" if action in ENCODING_STEPS else name
            key = "normalization" if action == "normalize" else key
            changes[key] = 1
        if fixed != text:
            changes["changed"] = 1
        return Rewrite(fixed, changes)
