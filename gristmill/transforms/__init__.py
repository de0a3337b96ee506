"""Transforms: pure functions that rewrite a document's text (PII masking, Unicode repair,
line-level cleaning), registered by name; `gristmill.pipeline.transform` runs them over a
corpus."""

from gristmill.transforms.base import (
    Rewrite,
    Transform,
    TransformConfig,
    TransformSpec,
    available,
    get,
    parse_specs,
    with_params,
)

__all__ = [
    "Rewrite",
    "Transform",
    "TransformConfig",
    "TransformSpec",
    "available",
    "get",
    "parse_specs",
    "with_params",
]
