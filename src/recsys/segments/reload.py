"""Watching segment YAML files and recompiling them when they change.

A :class:`SegmentSource` remembers the files a set of definitions was loaded
from (a folder stands for its ``*.yaml`` files, so a file added to or removed
from it counts as a change) and a SHA-256 over their names and contents.
:meth:`SegmentSource.poll` reads the files again, and when the digest moved
compiles them: new definitions on success; on failure (a
:class:`~recsys.segments.errors.RuleError` at ``file:line:column``, a file
that cannot be read) nothing, with the error logged and counted in
:attr:`SegmentSource.stats`. The previous definitions stay in use until the
files load again; the same broken content is reported once, not at every poll.
Reading and hashing a few kilobytes of YAML costs microseconds, so the content
itself is compared (an edit that keeps the size and the modification time is
seen too).

:class:`~recsys.segments.engine.SegmentEngine` polls its source in
:meth:`~recsys.segments.engine.SegmentEngine.reload_if_changed`, which the
stream consumer calls every ``ConsumerConfig.reload_check_s``.

Example:
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
    >>> _ = f.write_text("segments: [{name: a, enter: 'purchase_count >= 1'}]")
    >>> source = SegmentSource(f)
    >>> [s.name for s in source.load()], source.poll()
    (['a'], None)
    >>> _ = f.write_text("segments: [{name: b, enter: 'purchase_count >= 2'}]")
    >>> [s.name for s in source.poll() or []]
    ['b']
    >>> _ = f.write_text("segments: [{name: c, enter: 'purchase_count >= '}]")
    >>> source.poll(), source.stats.errors
    (None, 1)
    >>> source.stats.last_error_line, source.stats.last_error_column
    (1, 47)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig
from recsys.segments.errors import RuleError
from recsys.segments.loader import SegmentDefinition, load_segment_texts, segment_files

log = logging.getLogger(__name__)


@dataclass
class ReloadStats:
    """What a :class:`SegmentSource` saw since it was made.

    Attributes:
        checks: polls of the files.
        reloads: new definitions compiled after a change.
        errors: changes that failed to load (each distinct content once).
        last_error: the latest failure's message (``file:line:column: ...``
            for a rule error), or None once the files load again.
        last_error_source: the file of the latest rule error.
        last_error_line: its line (1-based).
        last_error_column: its column (1-based).
    """

    checks: int = 0
    reloads: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_source: str | None = None
    last_error_line: int | None = None
    last_error_column: int | None = None


class SegmentSource:
    """Segment YAML files, compiled on demand and watched for changes.

    Args:
        paths: files or folders (as for :func:`~recsys.segments.loader.load_segments`).
        config: profile settings the rules are compiled with.
        attributes: static attribute schema (features rules may use).
    """

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        config: ProfileConfig | None = None,
        attributes: AttributeSchema | None = None,
    ) -> None:
        listed = [paths] if isinstance(paths, str | Path) else list(paths)
        self.paths: tuple[str | Path, ...] = tuple(listed)
        self.config = config or ProfileConfig()
        self.attributes = attributes
        self.stats = ReloadStats()
        self._digest: str | None = None  # of the definitions in use
        self._failed: str | None = None  # of the latest content that failed

    def _read(self) -> tuple[str, list[tuple[str, str]]]:
        texts = [(str(f), f.read_text(encoding="utf-8")) for f in segment_files(self.paths)]
        h = hashlib.sha256()
        for name, text in texts:
            for part in (name, text):
                data = part.encode("utf-8", "surrogatepass")
                h.update(len(data).to_bytes(8, "little"))
                h.update(data)
        return h.hexdigest(), texts

    def load(self) -> list[SegmentDefinition]:
        """Compiles the files as they are now and takes them as the ones in use.

        Raises:
            RuleError: located at ``file:line:column``.
            OSError: a file cannot be read.
        """
        digest, texts = self._read()
        segments = load_segment_texts(texts, self.config, self.attributes)
        self._digest, self._failed = digest, None
        return segments

    def poll(self) -> list[SegmentDefinition] | None:
        """The new definitions when the files changed and load; else None.

        Never raises for the files' content or a file that cannot be read:
        the failure is logged and counted (:attr:`stats`), and the caller
        keeps what it runs.
        """
        self.stats.checks += 1
        try:
            digest, texts = self._read()
        except (OSError, ValueError) as e:  # a file removed, unreadable, not UTF-8
            self._fail(None, e)
            return None
        if digest == self._digest or digest == self._failed:
            return None
        try:
            segments = load_segment_texts(texts, self.config, self.attributes)
        except Exception as e:  # RuleError, or a loader bug: never the caller's crash
            self._fail(digest, e)
            return None
        self._digest, self._failed = digest, None
        st = self.stats
        st.last_error = st.last_error_source = None
        st.last_error_line = st.last_error_column = None
        st.reloads += 1  # last, as in _fail
        return segments

    def _fail(self, digest: str | None, error: Exception) -> None:
        st = self.stats
        message = str(error) if isinstance(error, RuleError) else f"{type(error).__name__}: {error}"
        if digest is None and message == st.last_error:
            return  # the same unreadable file as at the last poll: reported already
        self._failed = digest
        st.last_error = message
        if isinstance(error, RuleError):
            st.last_error_source = error.source
            st.last_error_line, st.last_error_column = error.line, error.column
        else:
            st.last_error_source = st.last_error_line = st.last_error_column = None
        log.error("segment definitions not reloaded, the previous ones stay in use: %s", message)
        # last: a reader on another thread that sees the count sees the error's details
        st.errors += 1
