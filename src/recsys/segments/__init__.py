"""Segments: a small rule language over profiles, evaluated per event and swept.

Public API: :func:`~recsys.segments.loader.load_segments`,
:func:`~recsys.segments.loader.load_segments_text`,
:class:`~recsys.segments.engine.SegmentEngine`,
:class:`~recsys.segments.reload.SegmentSource` (files watched for changes),
:class:`~recsys.segments.errors.RuleError`,
:func:`~recsys.segments.compiler.compile_rule`,
:func:`~recsys.segments.queries.churn`, :func:`~recsys.segments.queries.segment_size`.
"""

from recsys.segments.compiler import CompiledRule, compile_rule
from recsys.segments.engine import Replaced, SegmentEngine
from recsys.segments.errors import RuleError
from recsys.segments.loader import SegmentDefinition, load_segments, load_segments_text
from recsys.segments.queries import ChurnReport, churn, segment_size
from recsys.segments.reload import ReloadStats, SegmentSource

__all__ = [
    "ChurnReport",
    "CompiledRule",
    "ReloadStats",
    "Replaced",
    "RuleError",
    "SegmentDefinition",
    "SegmentEngine",
    "SegmentSource",
    "churn",
    "compile_rule",
    "load_segments",
    "load_segments_text",
    "segment_size",
]
