"""Service layer (core): the models one process serves: one Engine per model of the repository, and the routing of
a request's model name to its engine.

`MFD_MODEL_REPOSITORY` holds one model or a folder of models (mfd_common.model_store, docs/multi-model.md). Each
model gets its own Engine: its own backend handle (embedded TorchScript, or its own Triton model names), its own
micro-batcher (windows of two models never share a trunk call), its own condition cache and its own genome
(`MFD_FASTA_<NAME>`, or `MFD_FASTA` for the default model). The engines share nothing, so a request routed to one
can never read another's state; the front doors only ask this registry which engine answers a name.

A single-model repository (the bundled demo) is a registry of one, which is also the default: requests that name
no model, and KServe's historical model name `mfd`, keep reaching it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from mfd_common.model_store import (ModelStore, UnknownModelError, check_env_vars_distinct, model_env_var,
                                    open_store)
from mfd_common.triton_repository import triton_names

from ..backends import create_backend
from ..errors import RequestError
from ..repository import load_repository
from ..settings import Settings
from .engine import Engine

FASTA_PREFIX = "MFD_FASTA"


def model_fasta(settings: Settings, store: ModelStore, name: str,
                environ: Mapping[str, str] | None = None) -> Path | None:
    """Model `name`'s reference genome: `MFD_FASTA_<NAME>` when set, else `MFD_FASTA` for the default model.

    A model that is not the default and has no variable of its own has no genome (its intervals and variants are
    refused with `no_genome`): one FASTA never silently serves two assemblies."""
    env = os.environ if environ is None else environ
    own = env.get(model_env_var(FASTA_PREFIX, name), "").strip()
    if own:
        return Path(own)
    return settings.fasta if name == store.default else None


def open_models(settings: Settings) -> ModelStore:
    """The repository's models, checked: layout and names (ModelStoreError), per-model variables (ValueError)."""
    store = open_store(settings.model_repository, settings.default_model)
    check_env_vars_distinct(store.names, FASTA_PREFIX)
    return store


def not_found(name: Any, known: list[str], field: str = "model") -> RequestError:
    """404 `not_found` for an unknown model name, on the request field that named it."""
    return RequestError(field, str(UnknownModelError(str(name), known)), known, status=404, kind="not_found")


class ModelRegistry:
    """Model name → Engine, for every model of the repository (see the module docstring)."""

    def __init__(self, settings: Settings, store: ModelStore | None = None,
                 environ: Mapping[str, str] | None = None):
        self.settings = settings
        self.store = store or open_models(settings)
        names = triton_names(self.store)
        self.engines: dict[str, Engine] = {}
        for name in self.store.names:
            own = settings.model_copy(update={"model_repository": self.store.models[name],
                                              "fasta": model_fasta(settings, self.store, name, environ)})
            repository = load_repository(own.model_repository, require_models=own.backend == "embedded")
            backend = create_backend(own, repository, triton_names=names[name])
            self.engines[name] = Engine(own, repository, backend, name=name)

    @property
    def names(self) -> list[str]:
        return list(self.engines)

    @property
    def default(self) -> Engine | None:
        """The engine of requests that name no model (None with several models and no MFD_DEFAULT_MODEL)."""
        return self.engines[self.store.default] if self.store.default is not None else None

    @property
    def any(self) -> Engine:
        """The default engine, else the first: what model-independent pages (the docs) show."""
        return self.default or next(iter(self.engines.values()))

    def get(self, name: Any = None, *, field: str = "model") -> Engine:
        """The engine answering `name` (None or "": the default). RequestError: 404 `not_found` listing the
        served names for an unknown name (never a series or a log line per client string), 422 for a name that
        is not a string or for no name when there is no default."""
        if name is not None and not isinstance(name, str):
            raise RequestError(field, "a model name is a string", self.names)
        if not name:
            if self.store.default is None:
                raise RequestError(field, f"this deployment serves several models and has no default "
                                   f"(MFD_DEFAULT_MODEL): name one of {', '.join(self.names)}", self.names)
            return self.engines[self.store.default]
        engine = self.engines.get(name)
        if engine is None:
            raise not_found(name, self.names, field)
        return engine

    async def start(self) -> None:
        for engine in self.engines.values():
            await engine.start()

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()

    async def ready(self) -> bool:
        """Ready when every model's backend is (a model that cannot serve makes the pod not ready)."""
        for engine in self.engines.values():
            if not await engine.backend.ready():
                return False
        return True
