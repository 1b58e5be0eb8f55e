"""API layer (commands): the console scripts of `pyproject.toml`, one thin wrapper per command users type.

Every `[project.scripts]` entry points here rather than at the implementing module, and each wrapper imports its
module only when called: when a module moves (training/ is being reorganised), only the import path below changes,
never the installed command names. Each wrapper takes `argv` (None: the process's arguments) and returns the exit
status, which the console-script launcher passes to `sys.exit`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

Argv = Sequence[str] | None


def _run(target: str, argv: Argv) -> int:
    """Call `module:function(argv)` and return its status (None counts as success, as sys.exit treats it)."""
    module, function = target.split(":")
    main: Callable[[list[str] | None], int | None] = getattr(importlib.import_module(module), function)
    status = main(None if argv is None else list(argv))
    return int(status or 0)


def train(argv: Argv = None) -> int:
    """mfd-train: `python -m training.train`."""
    return _run("training.train:main", argv)


def evaluate(argv: Argv = None) -> int:
    """mfd-evaluate: `python -m training.evaluate`."""
    return _run("training.evaluate:main", argv)


def export(argv: Argv = None) -> int:
    """mfd-export: `python -m training.export` (checkpoint → model repository)."""
    return _run("training.export:main", argv)


def import_reference(argv: Argv = None) -> int:
    """mfd-import-reference: `python -m training.import_reference` (the authors' checkpoint → ours)."""
    return _run("training.import_reference:main", argv)


def build_store(argv: Argv = None) -> int:
    """mfd-build-store: `python -m training.build_store`."""
    return _run("training.build_store:main", argv)


def report(argv: Argv = None) -> int:
    """mfd-report: `python -m training.report` (a checkpoint's training report as one HTML file)."""
    return _run("training.report:main", argv)


def heldout(argv: Argv = None) -> int:
    """mfd-heldout: `python -m training.heldout` (train with tracks held out, score them from metadata alone)."""
    return _run("training.heldout:main", argv)


def enhancer_prediction(argv: Argv = None) -> int:
    """mfd-enhancer-prediction: `python -m training.enhancer_prediction` (f_bio / f_tech AUROC on a labelled BED)."""
    return _run("training.enhancer_prediction:main", argv)


def rare_variant_enrichment(argv: Argv = None) -> int:
    """mfd-rare-variant-enrichment: `python -m training.rare_variant_enrichment` (large effects among rare variants)."""
    return _run("training.rare_variant_enrichment:main", argv)


def batch(argv: Argv = None) -> int:
    """mfd-batch: `python -m service.batch`."""
    return _run("service.batch.__main__:main", argv)


def serve(argv: Argv = None) -> int:
    """mfd-serve: `python -m service`, i.e. `bentoml serve service.service:MFDService [OPTIONS]`.

    `service.__main__.main` reads `sys.argv` and replaces the process with BentoML's, whose `--help` lists
    BentoML's options, not ours; so `--help` is answered here (our settings are environment variables) and any
    other arguments go to `bentoml serve` unchanged.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="mfd-serve", description="Serve an exported MFD model repository over HTTP (REST) and gRPC.",
        epilog="Every option is passed on to `bentoml serve service.service:MFDService` (e.g. --port 3000, "
               "--host 0.0.0.0; `bentoml serve --help` lists them). The service is configured by environment "
               "variables: MFD_MODEL_REPOSITORY, MFD_BACKEND, MFD_FASTA, MFD_GRPC_PORT, MFD_AUTH_TOKEN, "
               "MFD_MAX_SEQUENCES, … (see service/README.md).")
    if "-h" in args or "--help" in args:
        parser.parse_args(["--help"])  # prints the help and exits 0
    from service.__main__ import main as serve_main

    sys.argv = [sys.argv[0], *args]
    serve_main()  # execs `python -m bentoml serve …`: only returns if exec fails (it raises then)
    return 0
