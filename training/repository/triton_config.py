"""Training layer (export): Triton `config.pbtxt`, built as Triton's `ModelConfig` protobuf and validated offline.

Rendering fills the `ModelConfig` message shipped in `tritonclient` and prints it with
`google.protobuf.text_format` (no hand-formatted text). Each config also carries the model card's identity as
string parameters (mfd_common.serving: model name, sha256 of the model file), which the service reads back from
Triton at start-up.

Validation parses the text with `google.protobuf.text_format` into Triton's own `ModelConfig` protobuf (shipped in
`tritonclient`), so a typo in a field name or an enum fails here, not at `tritonserver` start-up on a GPU node.
Semantic checks then compare names, dtypes and dims with the model card, because the protobuf alone happily
accepts a config whose input is `TYPE_FP32 [2175]`.

Shapes (Triton excludes the batch dimension from `dims` when `max_batch_size > 0`):

    mfd_trunk  TOKENS__0           TYPE_UINT8 [seq_len]       → FEATURES__0 TYPE_FP32 [d_tech + d_bio]
    mfd_head   CONDITION_CODES__0  TYPE_FP32  [codec width]   → W_TECH__0 TYPE_FP32 [d_tech]
                                                                W_BIO__1  TYPE_FP32 [d_bio]
                                                                BIAS__2   TYPE_FP32 [1]

The bias is a per-condition scalar. The exported head returns it as [K, 1] (not [K]) so that the embedded
TorchScript, Triton's libtorch backend and the Python-backend test server all give the same shape without a
`reshape` stanza; consumers take `bias[:, 0]` (or `reshape(-1)`).

CLI: `python -m training.triton_config model_repository/` checks every `*/config.pbtxt` under a repository
against its `model_card.json` and exits non-zero on the first problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from mfd_common.card import CARD_FILENAME, HEAD_MODEL, TRUNK_MODEL, ModelCard
from mfd_common.serving import (CONFIG_FILENAME, MODEL_FILENAME, PARAM_MODEL_SHA256, model_file_key,
                                 served_tensors)
LIBTORCH_PLATFORM = "pytorch_libtorch"
LIBTORCH_BACKEND = "pytorch"
PYTHON_BACKEND = "python"

DEFAULT_TRUNK_MAX_BATCH = 256
DEFAULT_HEAD_MAX_BATCH = 4096
DEFAULT_QUEUE_DELAY_US = 2000


class TritonConfigError(ValueError):
    """A config.pbtxt that does not parse or does not match the model card."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str          # Triton enum name, e.g. "TYPE_UINT8"
    dims: tuple[int, ...]   # without the batch dimension


@dataclass
class ModelSpec:
    """What a model in the repository must look like, whatever backend serves it."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instance_kind: str = "KIND_GPU"
    instance_count: int = 1
    warmup: bool = False
    parameters: dict[str, str] = field(default_factory=dict)  # extra string parameters (MFD_* identity)


def _preferred(max_batch: int) -> list[int]:
    sizes = [s for s in (16, 32, 64, 128, 256, 512, 1024) if s <= max_batch]
    sizes = sizes[-3:] if len(sizes) > 3 else sizes
    if max_batch not in sizes:
        sizes.append(max_batch)
    return sorted(set(sizes))


def _contract(card: ModelCard, model: str) -> dict[str, list[TensorSpec]]:
    """The served tensors of `model` (mfd_common.serving, shared with the service's start-up check)."""
    tensors = served_tensors(card)[model]
    return {kind: [TensorSpec(name, f"TYPE_{dtype}", dims) for name, dtype, dims in tensors[kind]]
            for kind in ("inputs", "outputs")}


def trunk_spec(card: ModelCard, *, max_batch_size: int = DEFAULT_TRUNK_MAX_BATCH,
               preferred_batch_sizes: Sequence[int] | None = None,
               max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, instance_kind: str = "KIND_GPU",
               instance_count: int = 1) -> ModelSpec:
    return ModelSpec(
        name=TRUNK_MODEL, **_contract(card, TRUNK_MODEL),
        max_batch_size=max_batch_size,
        preferred_batch_sizes=list(preferred_batch_sizes or _preferred(max_batch_size)),
        max_queue_delay_us=max_queue_delay_us, instance_kind=instance_kind, instance_count=instance_count,
        warmup=True,
    )


def head_spec(card: ModelCard, *, max_batch_size: int = DEFAULT_HEAD_MAX_BATCH,
              preferred_batch_sizes: Sequence[int] | None = None,
              max_queue_delay_us: int = 500, instance_kind: str = "KIND_CPU", instance_count: int = 1) -> ModelSpec:
    return ModelSpec(
        name=HEAD_MODEL, **_contract(card, HEAD_MODEL),
        max_batch_size=max_batch_size,
        preferred_batch_sizes=list(preferred_batch_sizes or _preferred(max_batch_size)),
        max_queue_delay_us=max_queue_delay_us, instance_kind=instance_kind, instance_count=instance_count,
    )


def expected_specs(card: ModelCard) -> dict[str, ModelSpec]:
    """Shape contract per model name (batch settings are not part of the contract)."""
    return {TRUNK_MODEL: trunk_spec(card), HEAD_MODEL: head_spec(card)}


# ---- rendering -------------------------------------------------------------------------------------------

def _add_tensors(field, tensors: Iterable[TensorSpec]) -> None:
    for t in tensors:
        field.add(name=t.name, data_type=mc.DataType.Value(t.data_type), dims=list(t.dims))


def build_config(spec: ModelSpec, *, backend: str = LIBTORCH_BACKEND) -> mc.ModelConfig:
    """Triton's own `ModelConfig` protobuf for `spec`: production libtorch (default) or the Python backend (tests).

    Filling the message (not formatting text) means a misspelt field or enum fails here, with the protobuf's error.
    """
    config = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    if backend == LIBTORCH_BACKEND:
        config.platform, config.backend = LIBTORCH_PLATFORM, LIBTORCH_BACKEND
    elif backend == PYTHON_BACKEND:
        config.backend = PYTHON_BACKEND
    else:
        raise ValueError(f"unsupported backend {backend!r}")
    _add_tensors(config.input, spec.inputs)
    _add_tensors(config.output, spec.outputs)
    config.instance_group.add(count=spec.instance_count, kind=mc.ModelInstanceGroup.Kind.Value(spec.instance_kind))
    config.dynamic_batching.preferred_batch_size.extend(spec.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    if backend == LIBTORCH_BACKEND:
        # Inference mode (no autograd bookkeeping); outputs are named <name>__<index> (libtorch convention).
        config.parameters["INFERENCE_MODE"].string_value = "true"
    for key, value in spec.parameters.items():  # the card's identity (MFD_*), read back by the service at start-up
        config.parameters[key].string_value = value
    if spec.warmup:
        warmup = config.model_warmup.add(name="zeros", batch_size=1)
        for t in spec.inputs:
            warmup.inputs[t.name].CopyFrom(mc.ModelWarmup.Input(
                data_type=mc.DataType.Value(t.data_type), dims=list(t.dims), zero_data=True))
    return config


def render_config(spec: ModelSpec, *, backend: str = LIBTORCH_BACKEND, comment: str = "") -> str:
    """config.pbtxt text for `spec`: `build_config` printed by `google.protobuf.text_format`, after `comment`."""
    lines = [f"# {line}" if line else "#" for line in comment.strip().splitlines()] if comment else []
    body = text_format.MessageToString(build_config(spec, backend=backend))
    return "\n".join(lines) + ("\n" if lines else "") + body


# ---- validation ------------------------------------------------------------------------------------------

def parse_config(text: str, source: str = CONFIG_FILENAME) -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise TritonConfigError(f"{source}: not a valid Triton ModelConfig: {err}") from None
    return config


def _dtype_name(value: int) -> str:
    return mc.DataType.Name(value)


def check_config(config: mc.ModelConfig, spec: ModelSpec, *, backend: str | None = None,
                 source: str = CONFIG_FILENAME) -> None:
    """Raise TritonConfigError listing every difference between `config` and the shape contract `spec`."""
    problems: list[str] = []
    if config.name != spec.name:
        problems.append(f"name is {config.name!r}, expected {spec.name!r}")
    is_libtorch = config.platform == LIBTORCH_PLATFORM or config.backend == LIBTORCH_BACKEND
    if config.platform and config.backend and is_libtorch and (
            config.platform != LIBTORCH_PLATFORM or config.backend != LIBTORCH_BACKEND):
        problems.append(f"platform {config.platform!r} and backend {config.backend!r} disagree")
    actual_backend = LIBTORCH_BACKEND if is_libtorch else config.backend
    if backend is not None and actual_backend != backend:
        problems.append(f"backend is {actual_backend or config.platform!r}, expected {backend!r}")
    if actual_backend not in (LIBTORCH_BACKEND, PYTHON_BACKEND):
        problems.append(f"unsupported platform/backend {config.platform!r}/{config.backend!r}")
    if config.max_batch_size <= 0:
        problems.append("max_batch_size must be > 0 (the first dimension is the batch)")

    def compare(kind: str, got: Sequence, want: Sequence[TensorSpec]) -> None:
        got_names = [t.name for t in got]
        want_names = [t.name for t in want]
        if got_names != want_names:
            problems.append(f"{kind} names are {got_names}, expected {want_names} (in this order)")
            return
        for tensor, expected in zip(got, want):
            if _dtype_name(tensor.data_type) != expected.data_type:
                problems.append(f"{kind} {tensor.name}: data_type {_dtype_name(tensor.data_type)}, "
                                f"expected {expected.data_type}")
            if tuple(tensor.dims) != expected.dims:
                problems.append(f"{kind} {tensor.name}: dims {list(tensor.dims)}, expected {list(expected.dims)}")
            if tensor.HasField("reshape"):
                problems.append(f"{kind} {tensor.name}: reshape is not used by mfd models")

    compare("input", config.input, spec.inputs)
    compare("output", config.output, spec.outputs)
    if actual_backend == LIBTORCH_BACKEND:
        for index, tensor in enumerate(config.input):
            if not tensor.name.endswith(f"__{index}"):
                problems.append(f"input {tensor.name}: libtorch needs the <name>__{index} convention")
        for index, tensor in enumerate(config.output):
            if not tensor.name.endswith(f"__{index}"):
                problems.append(f"output {tensor.name}: libtorch needs the <name>__{index} convention")
    if not config.HasField("dynamic_batching"):
        problems.append("dynamic_batching is missing")
    else:
        batching = config.dynamic_batching
        too_big = [s for s in batching.preferred_batch_size if s <= 0 or s > config.max_batch_size]
        if too_big:
            problems.append(f"preferred_batch_size {too_big} outside 1..max_batch_size={config.max_batch_size}")
        if batching.max_queue_delay_microseconds <= 0:
            problems.append("dynamic_batching.max_queue_delay_microseconds must be > 0")
    for group in config.instance_group:
        if group.count < 0:
            problems.append("instance_group count must be >= 0")
    if problems:
        raise TritonConfigError(f"{source}: " + "; ".join(problems))


def validate_repository(repository: str | Path, *, backend: str | None = LIBTORCH_BACKEND,
                        require_gpu_trunk: bool | None = None) -> dict[str, mc.ModelConfig]:
    """Check every `*/config.pbtxt` under `repository` against its model card; return the parsed configs.

    `backend=None` accepts libtorch or Python-backend configs. The production trunk must run on `KIND_GPU`
    (checked by default for libtorch repositories). Every model directory needs a version folder with
    `model.pt`, and both mfd models must be present.
    """
    repository = Path(repository)
    card_path = repository / CARD_FILENAME
    if not card_path.is_file():
        raise TritonConfigError(f"{repository}: {CARD_FILENAME} is missing")
    card = ModelCard.load(card_path)
    specs = expected_specs(card)
    configs: dict[str, mc.ModelConfig] = {}
    for path in sorted(repository.glob(f"*/{CONFIG_FILENAME}")):
        config = parse_config(path.read_text(), str(path))
        model_name = path.parent.name
        if model_name not in specs:
            raise TritonConfigError(f"{path}: unexpected model {model_name!r} (expected {sorted(specs)})")
        check_config(config, specs[model_name], backend=backend, source=str(path))
        versions = [p for p in path.parent.iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            raise TritonConfigError(f"{path.parent}: no numeric version directory")
        for version in versions:
            if not (version / MODEL_FILENAME).is_file():
                raise TritonConfigError(f"{version}: {MODEL_FILENAME} is missing")
        recorded = config.parameters[PARAM_MODEL_SHA256].string_value if PARAM_MODEL_SHA256 in config.parameters \
            else None
        expected_sha = card.checksums.get(model_file_key(model_name))
        if recorded != expected_sha:
            raise TritonConfigError(f"{path}: parameter {PARAM_MODEL_SHA256} is {recorded!r}, the model card "
                                    f"says {expected_sha!r}: config and card come from different exports")
        gpu_check = require_gpu_trunk if require_gpu_trunk is not None else backend == LIBTORCH_BACKEND
        if gpu_check and model_name == TRUNK_MODEL:
            kinds = {mc.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group}
            if kinds != {"KIND_GPU"}:
                raise TritonConfigError(f"{path}: the production trunk must run on KIND_GPU, got {sorted(kinds) or 'default'}")
        configs[model_name] = config
    missing = sorted(set(specs) - set(configs))
    if missing:
        raise TritonConfigError(f"{repository}: missing models {missing}")
    return configs
