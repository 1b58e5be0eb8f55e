"""Bench and test helpers: free loopback ports and the servers a run starts (bentoml, tritonserver, prometheus).

Servers are started with `start_new_session=True`, so their workers (BentoML's, Triton's Python-backend stubs)
share the leader's process group and one `killpg` reaches all of them. The benchmarks use these directly; the
test fixtures (tests/fixtures/service.py, triton.py, infra.py) build on `ServerProcess`, so a benchmark never
imports from tests/.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open until chosen, so none repeats)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def stop_process_group(process: subprocess.Popen | None, *, stop_signal: int = signal.SIGTERM,
                       timeout: float = 20.0) -> None:
    """Ask the group to stop gracefully, wait, then SIGKILL whatever is left of the group (stray workers)."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


@dataclass
class ServerProcess:
    """A server process group started by this run, its output in one log file under `workdir`.

    Subclasses name the log (`LOG_NAME`), say how to stop (`STOP_SIGNAL`) and when they are ready (`ready()`).
    """

    workdir: Path
    process: subprocess.Popen | None = field(default=None, repr=False, kw_only=True)

    LOG_NAME: ClassVar[str] = "server.log"
    LOG_TAIL: ClassVar[int | None] = 8000
    STOP_SIGNAL: ClassVar[int] = signal.SIGTERM
    WHAT: ClassVar[str] = "server"
    ERROR_TAIL: ClassVar[int] = 6000
    STOP_TIMEOUT: ClassVar[float] = 20.0

    def address(self, port: int, scheme: str = "") -> str:
        """`[scheme]host:port` of one of the server's ports (`host` defaults to loopback)."""
        return f"{scheme}{getattr(self, 'host', '127.0.0.1')}:{port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / self.LOG_NAME

    def logs(self, tail: int | None = -1) -> str:
        """The log's last `tail` characters (the class's default tail when not given; None: all of it)."""
        tail = self.LOG_TAIL if tail == -1 else tail
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:] if tail else text

    def launch(self, cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
               echo_command: bool = False) -> None:
        """Start `cmd` as its own process group, stdout and stderr into the log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            if echo_command:
                log.write(("$ " + " ".join(cmd) + "\n").encode())
                log.flush()
            self.process = subprocess.Popen(list(cmd), cwd=cwd, env=None if env is None else dict(env), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def ready(self) -> bool:
        raise NotImplementedError

    def run(self, cmd: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, echo_command: bool = False, poll_s: float = 0.25,
            error: Callable[[str], Exception] = RuntimeError) -> None:
        """`launch` then `wait_ready`; a server that does not become ready is stopped before the error propagates."""
        self.launch(cmd, env=env, cwd=cwd, echo_command=echo_command)
        try:
            self.wait_ready(timeout, error, poll_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float, error: Callable[[str], Exception] = RuntimeError,
                   poll_s: float = 0.25) -> None:
        """Until `ready()`; `error(message)` (with the log's tail) if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise error(f"{self.WHAT} exited with code {self.process.returncode}; log {self.log_path}:\n"
                            f"{self.logs(tail=self.ERROR_TAIL)}")
            if self.ready():
                return
            time.sleep(poll_s)
        raise error(f"{self.WHAT} not ready after {timeout:.0f} s; log {self.log_path}:\n"
                    f"{self.logs(tail=self.ERROR_TAIL)}")

    def stop(self, timeout: float | None = None) -> None:
        process, self.process = self.process, None
        stop_process_group(process, stop_signal=self.STOP_SIGNAL,
                           timeout=self.STOP_TIMEOUT if timeout is None else timeout)
