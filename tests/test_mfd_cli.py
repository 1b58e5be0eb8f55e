"""The console scripts of pyproject.toml: each `module:function` imports and answers `--help` with exit 0.

In-process (no install into a throwaway venv, which would take minutes): parse [project.scripts] with tomllib,
import each target and call it with ['--help'], as the launcher pip writes would.
"""
from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
WANTED = {"mfd-serve", "mfd-train", "mfd-evaluate", "mfd-export", "mfd-import-reference", "mfd-build-store",
          "mfd-batch", "mfd-report", "mfd-heldout", "mfd-enhancer-prediction", "mfd-rare-variant-enrichment"}


def test_every_command_users_type_is_declared_and_packaged():
    assert WANTED <= set(SCRIPTS)
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "mfd" in include and "mfd.*" in include


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_answers_help(name, capsys):
    module, function = SCRIPTS[name].split(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.lower().startswith("usage:") and len(out.splitlines()) > 3, out


def test_import_mfd_needs_no_optional_dependency():
    import subprocess
    import sys

    code = ("import sys; import mfd; "
            "assert not {'httpx', 'pandas', 'matplotlib', 'torch'} & set(sys.modules), sorted(sys.modules); "
            "print(mfd.__all__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Client" in result.stdout, result.stderr


def test_mfd_serve_passes_its_arguments_to_the_real_service(tmp_path):
    """Beyond --help: the wrapper hands over to `python -m service` (bentoml serve), whose preflight refuses a
    folder that is not a model repository with exit 2 and one line."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MFD_MODEL_REPOSITORY": str(tmp_path), "MFD_GRPC_PORT": "0",
           "BENTOML_HOME": str(tmp_path / "bentoml_home")}
    code = "import sys, mfd.cli; sys.exit(mfd.cli.serve())"
    result = subprocess.run([sys.executable, "-c", code, "--host", "127.0.0.1", "--port", "0"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "mfd-serve: cannot start: MFD_MODEL_REPOSITORY" in result.stderr
