"""A disk cache for trained artefacts shared between trials (a generator trained once per dataset and config).

A method that trains something every one of its trials could share (IOIS's image generator: the same
for its three variants and every classifier seed) keys it on what it depends on and stores it once::

    cache = ArtefactCache(cache_root(ctx) / "iois-generators")
    key = cache_key({"dataset": data.name, "train": split_hash(data.train), "config": {...}, "seed": 0})
    state, cached = cache.get_or_build(key, build=lambda: train_it())

``get_or_build`` returns the stored object when the key is present; otherwise it builds, writes atomically
(a temporary file in the same folder, then ``os.replace``) and returns it. Trials running at the same time
(Ray fan-out) take a file lock on the key while building, so the second one waits and then reads what the
first wrote instead of training a second copy. Objects are written with ``torch.save`` and read with
``torch.load(weights_only=True)``: dicts, lists, tensors, numbers and strings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError

ENV_CACHE_DIR = "HARNESS_CACHE_DIR"

try:  # POSIX; elsewhere concurrent builders may both build (the last rename wins, both results are valid)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def cache_root(ctx=None) -> Path:
    """The harness cache directory: ``ctx.cache_dir`` (the runner's ``--cache-dir`` / ``HARNESS_CACHE_DIR`` /
    ``~/.cache/harness``), or, for a context without one, ``HARNESS_CACHE_DIR`` or the XDG default."""
    explicit = getattr(ctx, "cache_dir", None) if ctx is not None else None
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness"


def cache_key(payload: Mapping[str, Any]) -> str:
    """A 20-hex-digit SHA-256 of ``payload`` as canonical JSON (sorted keys; tuples as lists)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def split_hash(split) -> str:
    """A hash of a split's images (shape and bytes) and labels: what a model trained on it depends on."""
    digest = hashlib.blake2b(digest_size=16)
    images = np.ascontiguousarray(split.images)
    digest.update(repr((images.shape, str(images.dtype))).encode())
    digest.update(memoryview(images).cast("B"))
    digest.update(np.ascontiguousarray(np.asarray(split.labels, dtype=np.int64)).tobytes())
    return digest.hexdigest()


class ArtefactCache:
    """Objects stored as ``root/<key>.pt``; see the module docstring."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not key or not key.replace("-", "").replace("_", "").isalnum():
            raise HarnessError(f"cache key must be letters, digits, '-' and '_' only; found {key!r}")
        return self.root / f"{key}.pt"

    def load(self, key: str) -> Any | None:
        """The stored object, or None when absent or unreadable (an unreadable file is removed)."""
        import torch

        path = self.path(key)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: rebuild rather than fail the trial
            path.unlink(missing_ok=True)
            return None

    def store(self, key: str, obj: Any) -> Path:
        """Write ``obj`` atomically under ``key``."""
        import torch

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on ``key`` across processes (a no-op where ``fcntl`` is missing)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.root / f"{key}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get_or_build(self, key: str, build: Callable[[], Any]) -> tuple[Any, bool]:
        """``(object, True)`` from the cache, or ``(build(), False)`` after storing what ``build`` returned."""
        found = self.load(key)
        if found is not None:
            return found, True
        with self.lock(key):
            found = self.load(key)  # built by another trial while this one waited for the lock
            if found is not None:
                return found, True
            obj = build()
            self.store(key, obj)
            return obj, False
