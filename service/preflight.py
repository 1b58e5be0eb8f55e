"""Service layer (entry): check the configuration once, before BentoML starts any worker.

`bentoml serve` imports `service.service` in its main process to read the service's configuration, then starts
worker processes that import it again and build the Engine. A worker that fails is restarted by BentoML, forever,
each time with a traceback, while the HTTP port stays open and probes hang. So the failures that no restart can
cure (bad settings, a folder that is not a model repository or does not match its card, a FASTA that cannot be
read) are checked here, in the main process at import time, and end it at once: one line on stderr naming the
problem, exit status 2, before any port is opened.

What only a worker can find out (the backend does not start: Triton never becomes ready, a model file does not
load) is reported back instead of raised: the worker writes one line to a file the main process named
(MFD_STARTUP_REPORT, "<main pid>:<path>"), asks the main process to stop and exits; the main process stops its
other workers, closes the port, prints that line and exits with status 2.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from .repository import RepositoryError, load_repository
from .settings import Settings, SettingsError

EXIT_STATUS = 2
REPORT_VARIABLE = "MFD_STARTUP_REPORT"


class StartupError(RuntimeError):
    """A configuration the service cannot start with."""


def check(settings: Settings) -> None:
    """Raise StartupError when `settings` cannot serve: repository (and, embedded, its weights) or FASTA."""
    try:
        load_repository(settings.model_repository, require_models=settings.backend == "embedded")
    except RepositoryError as exc:
        raise StartupError(f"MFD_MODEL_REPOSITORY: {exc}") from None
    except OSError as exc:
        raise StartupError(f"MFD_MODEL_REPOSITORY: cannot read {settings.model_repository}: {exc}") from None
    if settings.fasta is not None:
        from .core.genome import Genome

        try:
            Genome(settings.fasta).close()
        except Exception as exc:  # noqa: BLE001 - pyfaidx raises many kinds; every one is a bad MFD_FASTA
            raise StartupError(f"MFD_FASTA: cannot read {settings.fasta} as an indexed FASTA: "
                               f"{type(exc).__name__}: {exc}") from None


def settings_or_exit() -> Settings:
    """The environment's settings, checked; on any failure one line on stderr and exit status 2."""
    try:
        settings = Settings.from_env()
        if _report_path_of_parent() is None:  # a worker skips this: its main process checked, its Engine reports
            check(settings)
    except (SettingsError, StartupError) as exc:
        fail(str(exc))
    return settings


def one_line(message: str) -> str:
    return " ".join(message.split())


def fail(message: str) -> NoReturn:
    print(f"mfd-serve: cannot start: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_STATUS)


def _report_path_of_parent() -> Path | None:
    owner, _, path = os.environ.get(REPORT_VARIABLE, "").partition(":")
    return Path(path) if path and owner == str(os.getppid()) else None


def watch_workers() -> None:
    """In BentoML's main process (`bentoml …` whose parent did not set MFD_STARTUP_REPORT): name the report
    file its workers write a start-up failure to, and turn such a report into one line and exit status 2."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if _report_path_of_parent() is not None or "bentoml" not in (program.name, program.parent.name):
        return  # a worker (the main process set this up), or not `bentoml serve` at all (a test importing us)
    fd, path = tempfile.mkstemp(prefix="mfd-startup-", suffix=".txt")
    os.close(fd)
    os.environ[REPORT_VARIABLE] = f"{os.getpid()}:{path}"

    def report() -> None:
        try:
            text = Path(path).read_text().strip()
            Path(path).unlink()
        except OSError:
            return
        if text:
            print(f"mfd-serve: cannot start: {text}", file=sys.stderr, flush=True)
            os._exit(EXIT_STATUS)  # BentoML's CLI has already shut down cleanly; only its status is replaced

    atexit.register(report)


def worker_failed(message: str) -> bool:
    """In a worker whose start-up failed: report `message` to the main process and ask it to stop (no restart
    loop). False when this process is not a worker of a watching main process (then the caller raises)."""
    path = _report_path_of_parent()
    if path is None:
        return False
    path.write_text(one_line(message) + "\n")
    os.kill(os.getppid(), signal.SIGTERM)
    return True
