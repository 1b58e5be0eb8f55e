"""Contract (mfd_common): publish a file or a folder atomically: build it beside its final place, then rename.

Whoever reads our artifacts (the service loading a model repository, training opening a data store or resuming a
checkpoint, a rerun of an interrupted build) sees the old version or the new one, never half of one: the new
version is written under a sibling name (same folder, so same file system) and renamed into place, which
rename(2) does atomically. A folder that already exists is first renamed aside (`<final>.old`) and removed once the
new one is in place, since rename(2) cannot replace a non-empty folder.

Two ways to stage:
- `staged(final)`: a fresh sibling (file path or new folder), published when the `with` block succeeds and removed
  when it fails;
- a build that resumes after an interruption keeps its work in `partial_path(final)` (`<final>.partial`, a fixed
  name a rerun finds again) and calls `publish` itself when complete.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PARTIAL_SUFFIX = ".partial"
OLD_SUFFIX = ".old"


def partial_path(final: str | Path) -> Path:
    """The fixed staging name of a resumable build of `final`: `<final>.partial`, beside it."""
    final = Path(final)
    return final.with_name(final.name + PARTIAL_SUFFIX)


def publish(staged: str | Path, final: str | Path) -> None:
    """Rename the finished file or folder `staged` into `final`'s place, replacing what is there."""
    staged, final = Path(staged), Path(final)
    if staged.is_dir() and final.exists():
        old = final.with_name(final.name + OLD_SUFFIX)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old)
    else:
        os.replace(staged, final)


@contextmanager
def staged(final: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a fresh sibling of `final` to build (a new empty folder if `directory`, else a file path to write).

    When the block returns, it is published as `final`; when it raises, it is removed and `final` is untouched.
    The sibling has a fixed hidden name (`.<name>.partial`), so what a killed process left there is cleared by the
    next attempt instead of piling up (one writer per artifact, as everywhere in this project).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f".{final.name}{PARTIAL_SUFFIX}")
    _remove(work)
    if directory:
        work.mkdir()
    try:
        yield work
        publish(work, final)
    finally:
        _remove(work)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_atomically(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` through a staged sibling."""
    with staged(path) as work:
        if isinstance(data, bytes):
            work.write_bytes(data)
        else:
            work.write_text(data, encoding="utf-8")
