"""A start-up that cannot succeed ends `python -m service` (how `make demo` serves) within seconds: exit status 2,
one line naming the problem, no traceback, no restart loop and nothing left listening on the port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.processes import free_port, stop_process_group

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_WITHIN_S = 15.0  # measured ≈2 s (repository) and ≈9 s (worker: BentoML start + 1 s Triton wait) on 2 cores


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def serve(tmp_path: Path, env: dict[str, str]) -> tuple[int | None, str, float, int]:
    port = free_port()
    full_env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "MFD_GRPC_PORT": "0", **env}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=REPO_ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        output, _ = process.communicate(timeout=EXIT_WITHIN_S)
        return process.returncode, output, time.monotonic() - start, port
    except subprocess.TimeoutExpired:
        stop_process_group(process, timeout=10)
        return None, process.stdout.read() if process.stdout else "", time.monotonic() - start, port


def test_a_folder_without_a_model_card_ends_the_process_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, output, elapsed, port = serve(tmp_path, {"MFD_MODEL_REPOSITORY": str(empty)})
    assert status == 2, (status, elapsed, output[-3000:])
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mfd-serve: cannot start: MFD_MODEL_REPOSITORY"), output
    assert str(empty) in lines[0] and "model_card.json" in lines[0]
    assert "Traceback" not in output and not listening(port)


@pytest.mark.parametrize("env,fragment", [
    ({"MFD_MAX_INFLIGHT": "0"}, "MFD_MAX_INFLIGHT"),
    ({"MFD_FASTA": "/no/such/genome.fa"}, "MFD_FASTA"),
    ({"MFD_DEFAULT_MODEL": "hg19"}, "MFD_DEFAULT_MODEL='hg19' names no model here; the models are mfd-demo"),
    ({"MFD_FASTA_MFD_DEMO": "/no/such/genome.fa"}, "MFD_FASTA_MFD_DEMO: cannot read /no/such/genome.fa"),
])
def test_bad_settings_end_the_process_with_one_line(tmp_path, env, fragment):
    status, output, _, port = serve(tmp_path, env)
    assert status == 2 and output.strip().count("\n") == 0 and fragment in output, output[-3000:]
    assert "Traceback" not in output and not listening(port)


def test_a_backend_that_cannot_start_stops_the_server_instead_of_restarting_it(tmp_path):
    """Triton never ready: found only in the worker, which reports it to the main process and ends the server."""
    status, output, elapsed, port = serve(tmp_path, {"MFD_BACKEND": "triton", "MFD_TRITON_URL": f"127.0.0.1:{free_port()}",
                                                     "MFD_TRITON_STARTUP_TIMEOUT_S": "1"})
    assert status == 2, (status, elapsed, output[-3000:])
    assert output.strip().splitlines()[-1].startswith("mfd-serve: cannot start: RuntimeError: no Triton"), output
    assert output.count("Running startup hook") == 1  # no restart
    assert "Traceback" not in output and not listening(port)
