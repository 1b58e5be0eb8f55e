"""Service layer (shared): service configuration, read once from the environment (12-factor: the same image runs
laptop → k8s).

Every knob has a default that serves the bundled demo model on CPU, so `bentoml serve service.service:MFDService`
works from a fresh checkout with no environment at all. pydantic-settings reads `MFD_<FIELD>` variables and
validates them; each default is declared once, on its field.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The demo model bundled with the repository (``<repo>/model_repository``), found relative to this package so
#: the default does not depend on the working directory.
BUNDLED_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"

#: On CPU, per-window throughput *drops* with batches beyond ~16 (activations fall out of cache; measured
#: 97 → 62 windows/s from 16 to 64 with a 128-channel trunk), while GPUs and Triton want larger ones.
CPU_MAX_BATCH, ACCELERATED_MAX_BATCH = 16, 64


class SettingsError(ValueError):
    """A configuration value that cannot be used; raised at start-up, never at request time."""


class Settings(BaseSettings):
    """All service settings; field `x` is set by the environment variable `MFD_X`."""

    model_config = SettingsConfigDict(env_prefix="MFD_", frozen=True, extra="ignore", case_sensitive=False)

    model_repository: Path = BUNDLED_REPOSITORY          # one model, or a folder of models (docs/multi-model.md)
    default_model: Optional[str] = None                  # with several models: the one a request naming none gets
    backend: Literal["embedded", "triton"] = "embedded"
    triton_url: str = "localhost:8001"                   # host:port[,host:port…]; a scheme is stripped
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(30.0, ge=0)
    triton_startup_timeout_s: float = Field(900.0, ge=0)  # how long start-up waits for Triton (GPU node + image pull)
    fasta: Optional[Path] = None                         # needed for intervals and variants
    grpc_port: int = Field(3001, ge=0)                   # 0 disables the gRPC server
    grpc_host: str = "0.0.0.0"
    auth_token: Optional[str] = None                     # unset or empty: no auth
    max_sequences: int = Field(256, ge=1)                # windows or variants per request
    max_conditions: int = Field(512, ge=1)
    max_inflight: int = Field(64, ge=1)                  # more → 503 / UNAVAILABLE
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # /attribute (service.core.attribution): ISM forward passes (one full 2177-base window: 6 532) or gradient
    # forward+backward rows per request, and map values per response (~12 bytes each as JSON).
    max_attribution_passes: int = Field(16384, ge=1)
    max_attribution_floats: int = Field(4 * 1024 * 1024, ge=1)
    max_batch: int = Field(0, ge=0)                      # windows per trunk call; 0: CPU_MAX_BATCH or ACCELERATED_MAX_BATCH
    batch_wait_ms: float = Field(2.0, ge=0)              # extra wait to fill a batch
    condition_cache_size: int = Field(4096, ge=1)
    device: str = "cpu"                                  # embedded backend: cpu, cuda, cuda:1 …
    # 0: one less than the cores this process may use (at least 1) on CPU, torch's default on GPU. torch's own
    # default (all cores) starves the event loop: its OpenMP threads spin on every core between kernels. Measured
    # on 2 cores, 8 clients, side by side: p50 1.29 s / p99 4.36 s / 2.3 s gaps (torch default) vs
    # 0.24 s / 0.35 s / 0.17 s (1 thread) — 6x the throughput.
    torch_threads: int = Field(0, ge=0)
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"  # embedded trunk compute, via torch.autocast
    workers: int = Field(1, ge=1)                        # BentoML worker processes
    # BentoML's request deadline (traffic.timeout). Its TimeoutMiddleware leaves one timer per request pending
    # for this long, pinning that request's context: memory held ≈ request rate × this × ~0.5 KB, so keep it
    # near the slowest legitimate request rather than BentoML's habit of minutes (see service/README.md).
    request_timeout_s: float = Field(60.0, gt=0)
    # OpenTelemetry spans for requests. Off: every URL is excluded from BentoML's tracing middleware, which
    # otherwise builds a ~5 KB span per request (pinned by that timer) even when nothing is exported.
    tracing: bool = False

    @field_validator("backend", "triton_protocol", "precision", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("triton_url")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        value = value.strip()
        for scheme in ("http://", "https://", "grpc://"):
            if value.startswith(scheme):
                value = value[len(scheme):]
        return value.rstrip("/")

    @field_validator("auth_token", "fasta", "default_model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _cpu_defaults(self) -> "Settings":
        cpu_embedded = self.backend == "embedded" and self.device.strip().lower() == "cpu"
        if self.max_batch == 0:
            object.__setattr__(self, "max_batch", CPU_MAX_BATCH if cpu_embedded else ACCELERATED_MAX_BATCH)
        if self.torch_threads == 0 and cpu_embedded:
            object.__setattr__(self, "torch_threads", max(1, len(os.sched_getaffinity(0)) - 1))
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings from `env` (default: os.environ); SettingsError names the variable of the first bad value."""
        env = os.environ if env is None else env
        values = {key[4:].lower(): value for key, value in env.items()
                  if key.upper().startswith("MFD_") and value.strip() != ""}
        known = {k: v for k, v in values.items() if k in cls.model_fields}
        try:  # only `env` counts: a prefix no variable has keeps os.environ out when another mapping is given
            return cls(_env_prefix="MFD_FROM_MAPPING_ONLY_", **known)  # type: ignore[call-arg]
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            name = f"MFD_{str(error['loc'][0]).upper()}" if error.get("loc") else "MFD_*"
            raise SettingsError(f"{name}: {error['msg']} (got {str(error.get('input'))[:100]!r})") from None
