"""Service layer (batch): the batch tool's engine: the service's own Engine (backends, micro-batcher, condition
cache, genome), built from command-line options instead of the environment, so batch and service scores are the
same numbers.

Conditions on the command line are what `/predict` accepts, one per argument: a track id (`DEMO001`), a JSON
mapping (`'{"biosample": "HepG2", "target": "CTCF"}'`) or either one named for the output (`hepg2_ctcf={…}`);
the name labels the INFO fields, table columns and bigWig files.
"""
from __future__ import annotations

import argparse
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from ..api.strict_json import condition_value
from ..core.conditions import ResolvedCondition
from ..core.effects import GEOMETRIES, EnsembleSpec
from ..core.engine import Engine
from ..core.genome import GenomeError
from ..errors import RequestError
from ..settings import Settings
from .shards import BatchError

_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)=(.+)$", re.S)


@dataclass(frozen=True)
class NamedCondition:
    name: str          # safe for VCF INFO ids, column names and file names
    value: Any         # what the engine parses: a track id or a metadata mapping


def safe_name(text: str) -> str:
    """A VCF INFO-id-safe label ([A-Za-z0-9_.], not starting with a digit)."""
    name = re.sub(r"[^A-Za-z0-9_.]", "_", text)
    return name if re.match(r"^[A-Za-z_]", name) else f"c_{name}"


def parse_conditions(items: list[str]) -> list[NamedCondition]:
    named: list[NamedCondition] = []
    for k, item in enumerate(items):
        match = _NAME.match(item)
        name, text = (match.group(1), match.group(2)) if match and not item.lstrip().startswith("{") else (None, item)
        text = text.strip()
        try:  # the service's own reading of a condition given as text (strict JSON, or a bare track id)
            value: Any = condition_value(text, f"--conditions[{k}]")
        except RequestError as exc:
            raise BatchError(f"{exc.field}: {exc.message}: {text[:200]!r}") from None
        if name is None:
            name = value if isinstance(value, str) else (value.get("track") if isinstance(value, dict)
                                                         and "track" in value else f"C{k}")
        named.append(NamedCondition(safe_name(str(name)), value))
    names = [c.name for c in named]
    if len(set(names)) != len(names):
        raise BatchError(f"--conditions: names must be unique, got {names}; name them NAME=JSON")
    return named


def describe(condition: ResolvedCondition) -> str:
    """One-line text of a resolved condition for headers (no double quotes: VCF Description strings)."""
    if condition.track:
        return f"track {condition.track}"
    return ", ".join(f"{k}={v}" for k, v in condition.metadata.items())


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and backend (the service's settings)")
    group.add_argument("--conditions", nargs="+", required=True, metavar="COND",
                       help="track ids, JSON metadata mappings, or NAME=either (see module docs)")
    group.add_argument("--fasta", type=Path, required=True, help="reference FASTA (indexed by pyfaidx on first use)")
    group.add_argument("--model-repository", type=Path, default=None,
                       help="model repository (default: MFD_MODEL_REPOSITORY or the bundled demo model)")
    group.add_argument("--backend", choices=("embedded", "triton"), default=None,
                       help="embedded TorchScript (default) or a Triton server (MFD_BACKEND)")
    group.add_argument("--triton-url", default=None, help="host:port of Triton (MFD_TRITON_URL)")
    group.add_argument("--triton-protocol", choices=("grpc", "http"), default=None)
    group.add_argument("--device", default=None, help="embedded backend device: cpu, cuda, cuda:1 …")
    group.add_argument("--max-batch", type=int, default=None, help="windows per trunk call (MFD_MAX_BATCH)")
    group.add_argument("--biological-only", action="store_true",
                       help="technical features held at their mean: the bias-free biological read-out")


def add_ensemble_options(parser: argparse.ArgumentParser, *, shifts: int, strands: int,
                         geometry: str | None = None) -> None:
    """--shifts/--strands, and --geometry when a default is given (variant effects; tracks stay centred)."""
    group = parser.add_argument_group("ensembling (service.core.effects)")
    group.add_argument("--shifts", type=int, default=shifts, help=f"shifted crops per window (default {shifts})")
    group.add_argument("--strands", type=int, choices=(1, 2), default=strands,
                       help=f"1: forward only, 2: average with the reverse complement (default {strands})")
    if geometry is not None:
        group.add_argument("--geometry", choices=GEOMETRIES, default=geometry,
                           help="reference: the authors' gnomAD crops; centred: crops around the centred window "
                                f"(default {geometry}; docs/variant-effects.md)")


def ensemble_from(args: argparse.Namespace) -> EnsembleSpec:
    try:
        return EnsembleSpec(args.shifts, args.strands, getattr(args, "geometry", "centred"))
    except ValueError as exc:
        raise BatchError(f"--shifts/--strands: {exc}") from None


def settings_from(args: argparse.Namespace) -> Settings:
    """The service's settings from the environment, overridden by the options given (batch: no extra wait)."""
    base = Settings.from_env()
    overrides: dict[str, Any] = {"fasta": args.fasta, "batch_wait_ms": 0.0, "grpc_port": 0}
    for option, key in (("model_repository", "model_repository"), ("backend", "backend"),
                        ("triton_url", "triton_url"), ("triton_protocol", "triton_protocol"),
                        ("device", "device"), ("max_batch", "max_batch")):
        value = getattr(args, option, None)
        if value is not None:
            overrides[key] = value
    if overrides.get("backend") == "triton" and args.max_batch is None:
        overrides["max_batch"] = max(base.max_batch, 64)
    return Settings.model_validate({**base.model_dump(), **overrides})


@contextlib.asynccontextmanager
async def open_engine(args: argparse.Namespace, *, start: bool = True) -> AsyncIterator[Engine]:
    """The engine; `start=False` (merging only) loads the card, codec and genome but never the backend."""
    try:
        engine = Engine(settings_from(args))
    except GenomeError as exc:
        raise BatchError(str(exc)) from None
    try:
        if start:
            await engine.start()
        yield engine
    finally:
        await engine.close()


def resolve(engine: Engine, conditions: list[NamedCondition]) -> list[ResolvedCondition]:
    try:
        return engine.conditions.parse_many([c.value for c in conditions], prefix="--conditions")
    except RequestError as exc:
        allowed = f" (allowed: {', '.join(map(str, exc.allowed[:30]))})" if exc.allowed else ""
        raise BatchError(f"{exc.field}: {exc.message}{allowed}") from None
