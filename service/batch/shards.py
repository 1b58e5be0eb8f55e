"""Service layer (batch): shards, resumable work directories and atomic outputs for the batch tool.

A batch job is cut into numbered shards (record chunks of a VCF, bin chunks of a region). Each finished shard
is one `.npz` file in the work directory, written to a temporary name and renamed into place, so a file that
exists is complete: after a crash (or a killed Kubernetes pod) a rerun skips every shard whose file exists and
redoes only the rest. Several processes may share one work directory (an Indexed Job on a shared volume), each
taking the shards `i` with `i % count == index`. The work directory's `manifest.json` records what the job is
(input, conditions, ensemble, model checksums); a rerun with different settings refuses to mix its shards in.

Final outputs are written the same way (`atomic_output`): nothing half-written is ever left under the
requested name.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

import numpy as np

from mfd_common.publish import staged

MANIFEST = "manifest.json"


class BatchError(RuntimeError):
    """A batch job that cannot go on; the message says what to change. The CLI prints it and exits non-zero."""


def atomic_output(path: Path) -> ContextManager[Path]:
    """A path beside `path` to write; renamed to `path` on success, removed on failure (mfd_common.publish)."""
    return staged(path)


def shard_ranges(total: int, size: int) -> list[tuple[int, int]]:
    """[start, end) item ranges of `size` items covering `total` items (the last may be shorter)."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


@dataclass
class WorkDir:
    root: Path

    def prepare(self, manifest: dict[str, Any]) -> None:
        """Create the directory and its manifest, or check that an existing one describes the same job."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST
        text = json.dumps(manifest, indent=1, sort_keys=True)
        if path.exists():
            existing = json.loads(path.read_text())
            if existing != json.loads(text):
                changed = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k))
                raise BatchError(f"{self.root} holds shards of a different job (differs in: {', '.join(changed)}); "
                                 "remove it or pass another --work directory")
            return
        with atomic_output(path) as tmp:
            tmp.write_text(text)

    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.exists():
            raise BatchError(f"{self.root} has no {MANIFEST}: no shards were computed there yet")
        return json.loads(path.read_text())

    def shard_path(self, index: int) -> Path:
        return self.root / f"shard-{index:06d}.npz"

    def done(self, index: int) -> bool:
        return self.shard_path(index).exists()

    def missing(self, count: int) -> list[int]:
        return [i for i in range(count) if not self.done(i)]

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        path = self.shard_path(index)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a path
                np.savez(handle, **arrays)

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.shard_path(index), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def wait_for(self, count: int, timeout_s: float, poll_s: float = 5.0) -> None:
        """Block until all `count` shards exist (the merge step of a parallel job), or raise after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while missing := self.missing(count):
            if time.monotonic() >= deadline:
                raise BatchError(f"{len(missing)} of {count} shards still missing after {timeout_s:.0f} s "
                                 f"(first: {missing[:5]}); rerun the failed shards, then merge again")
            time.sleep(poll_s)


def my_shards(count: int, index: int, of: int) -> list[int]:
    """The shards process `index` of `of` computes: every `of`-th, starting at `index`."""
    if not 0 <= index < of:
        raise BatchError(f"--shard-index must be in 0..{of - 1}, got {index}")
    return [i for i in range(count) if i % of == index]
