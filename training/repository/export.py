"""Training layer (export): checkpoint → Triton model repository (TorchScript, parity-checked against eager).

    python -m training.export CKPT --out model_repository/ [--reverse-complement-average] [--max-batch-size 256]

writes

    model_repository/
      model_card.json          the checkpoint's card + export info (checksums of the .pt files relative to the
                               repository root, reverse_complement_average, versions, parity figures)
      mfd_trunk/config.pbtxt   pytorch_libtorch, KIND_GPU, dynamic batching
      mfd_trunk/1/model.pt     TorchScript: uint8 tokens [N, L] → features [N, D_tech + D_bio]
      mfd_head/config.pbtxt    pytorch_libtorch, KIND_CPU (6.5 MFLOP per condition; not worth a GPU hop)
      mfd_head/1/model.pt      TorchScript: condition codes [K, C] → (w_tech [K, D_tech], w_bio [K, D_bio], bias [K, 1])

Both TorchScript files are reloaded from disk after writing and compared with the eager model on seeded random
inputs; any mismatch beyond tolerance raises `ExportParityError` and nothing is left in the output directory.
Other files already in `out_dir` (a README, say) are kept; the two model folders and the card are replaced.
"""
from __future__ import annotations

import datetime as _dt
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mfd_common.card import CARD_FILENAME, HEAD_MODEL, TRUNK_MODEL, ModelCard, sha256_file, verify_checksums
from mfd_common import serving, triton_compat
from mfd_common.model_store import ModelStoreError, named_model_dir
from mfd_common.publish import publish
from mfd_common.tokens import reverse_complement

from ..model.checkpoint import load_checkpoint
from ..model.network import MFDModel, condition_bias, reverse_complement_tokens
from . import triton_config

EXPORT_FORMAT_VERSION = "1"
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4


class ExportError(RuntimeError):
    """The checkpoint cannot be exported (wrong kind of model, unusable card, …)."""


class ExportParityError(ExportError):
    """The exported TorchScript disagrees with the eager model."""


class TritonCompatWarning(UserWarning):
    """The Triton release the deployment uses carries a libtorch older than the torch exporting now."""


def warn_if_triton_too_old(exporting_torch: str, triton_tag: str | None = None) -> str | None:
    """Warn (and return the reason) when Triton `triton_tag` (default: the tag configured in
    k8s/components/triton) may not load TorchScript written by `exporting_torch` (mfd_common.triton_compat)."""
    reason = triton_compat.incompatibility(exporting_torch, triton_tag)
    if reason:
        warnings.warn(reason, TritonCompatWarning, stacklevel=2)
    return reason


class ExportedTrunk(nn.Module):
    """uint8 tokens [N, L] → batch-normalised features [N, D]; optionally averaged over both strands.

    L is the model's window in bases (2177 for the reference's 2176 dinucleotide positions). Tokens are validated
    (2-D, uint8, length L, codes 0..4) because a silently mis-shaped window still yields features: the
    central-bin crop would just land somewhere else.
    """

    def __init__(self, model: MFDModel, reverse_complement_average: bool):
        super().__init__()
        self.onehot, self.stem, self.tower = model.onehot, model.stem, model.tower
        self.dilated_residual_block, self.pointwise = model.dilated_residual_block, model.pointwise
        self.bn_features = model.bn_features
        self.crop = int(model.cfg.crop)
        self.seq_len = int(model.cfg.window_bases)
        self.reverse_complement_average = bool(reverse_complement_average)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.dilated_residual_block(self.tower(self.stem(self.onehot(tokens))))
        x = x[:, :, self.crop:x.shape[2] - self.crop]
        return self.bn_features(self.pointwise(x).flatten(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.size(1) != self.seq_len:
            raise ValueError("TOKENS__0 must have shape [N, " + str(self.seq_len) + "], got "
                             + str(tokens.shape))
        if tokens.dtype != torch.uint8:
            raise ValueError("TOKENS__0 must be uint8 codes (A,C,G,T,N = 0..4)")
        if tokens.numel() > 0 and bool((tokens > 4).any()):
            raise ValueError("TOKENS__0 holds codes > 4; allowed: A,C,G,T,N = 0..4")
        if self.reverse_complement_average:
            n = tokens.size(0)
            rc = reverse_complement_tokens(tokens)
            both = self.features(torch.cat([tokens, rc], dim=0))
            return 0.5 * (both[:n] + both[n:])
        return self.features(tokens)


class ExportedHead(nn.Module):
    """Condition codes [K, W] float32 → (w_tech [K, D_tech], w_bio [K, D_bio], bias [K, 1]).

    The bias follows the card's `bias_rule` (`training.model.network.condition_bias`); the service replaces it with the
    track's own bias when a request names a trained track.
    """

    def __init__(self, model: MFDModel, width: int):
        super().__init__()
        self.metadata_embedding = model.metadata_embedding
        self.register_buffer("track_codes", model.track_codes.detach().clone())
        self.register_buffer("track_bias", model.bias.detach().clone())
        self.starts: List[int] = list(model.variable_starts)
        self.ends: List[int] = list(model.variable_ends)
        self.width = int(width)

    def forward(self, codes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if codes.dim() != 2 or codes.size(1) != self.width:
            raise ValueError("CONDITION_CODES__0 must have shape [K, " + str(self.width) + "], got "
                             + str(codes.shape))
        codes = codes.float()
        weights = self.metadata_embedding(codes)
        bias = condition_bias(codes, self.track_codes, self.track_bias, self.starts, self.ends)
        return weights[0], weights[1], bias.unsqueeze(1)


# ---- eager references (what the exported files must reproduce) ------------------------------------------

@torch.no_grad()
def eager_features(model: MFDModel, tokens: np.ndarray | torch.Tensor, *, reverse_complement_average: bool = False
                   ) -> np.ndarray:
    """Features of the eager model; with RC averaging, the mean over the window and its reverse complement."""
    tokens = np.asarray(tokens, dtype=np.uint8)
    model = model.eval()
    forward = model.features(torch.from_numpy(tokens)).numpy()
    if not reverse_complement_average:
        return forward
    backward = model.features(torch.from_numpy(reverse_complement(tokens))).numpy()
    return 0.5 * (forward + backward)


@torch.no_grad()
def eager_head(model: MFDModel, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w_tech, w_bio, bias = model.eval().head_weights(torch.as_tensor(np.asarray(codes, dtype=np.float32)))
    return w_tech.numpy(), w_bio.numpy(), bias.numpy()[:, None]


def parity_inputs(card: ModelCard, n_windows: int = 4, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random tokens (with some N) and condition codes: every track, empty, and random subsets."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 4, size=(n_windows, card.seq_len), dtype=np.uint8)
    tokens[rng.random(tokens.shape) < 0.01] = 4
    codec = card.metadata_codec()
    codes = [codec.encode(t.metadata, strict=False) for t in card.tracks]
    codes.append(np.zeros(codec.width, np.float32))
    codes.append((rng.random(codec.width) < 0.3).astype(np.float32))
    return tokens, np.stack(codes).astype(np.float32)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def check_parity(model: MFDModel, card: ModelCard, trunk_path: Path, head_path: Path, *,
                 reverse_complement_average: bool, atol: float = PARITY_ATOL, rtol: float = PARITY_RTOL,
                 n_windows: int = 4) -> dict[str, float]:
    """Reload the written TorchScript files and compare with eager; raise ExportParityError on mismatch."""
    tokens, codes = parity_inputs(card, n_windows=n_windows)
    trunk = torch.jit.load(str(trunk_path), map_location="cpu").eval()
    head = torch.jit.load(str(head_path), map_location="cpu").eval()
    try:
        with torch.no_grad():
            got_features = trunk(torch.from_numpy(tokens)).numpy()
            got_head = [t.numpy() for t in head(torch.from_numpy(codes))]
    except (torch.jit.Error, RuntimeError, ValueError) as err:  # TorchScript raises its input checks as jit.Error
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ExportParityError(f"the exported model differs from eager: it refuses the eager model's inputs "
                                f"({first})") from None
    want_features = eager_features(model, tokens, reverse_complement_average=reverse_complement_average)
    want_head = eager_head(model, codes)
    report = {"features_max_abs_diff": _max_abs(got_features, want_features)}
    checks = [("features", got_features, want_features)]
    for name, got, want in zip(("w_tech", "w_bio", "bias"), got_head, want_head):
        report[f"{name}_max_abs_diff"] = _max_abs(got, want)
        checks.append((name, got, want))
    for name, got, want in checks:
        if got.shape != want.shape:
            raise ExportParityError(f"exported {name} has shape {got.shape}, eager gives {want.shape}")
        if not np.allclose(got, want, atol=atol, rtol=rtol):
            raise ExportParityError(f"exported {name} differs from eager: max |Δ| = {_max_abs(got, want):.3g} "
                                    f"(atol={atol}, rtol={rtol})")
    report.update(atol=atol, rtol=rtol, n_windows=int(tokens.shape[0]), n_conditions=int(codes.shape[0]))
    return report


# ---- export ----------------------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    return {"torch": torch.__version__.split("+")[0], "numpy": np.__version__,
            "python": platform.python_version(), "export_format": EXPORT_FORMAT_VERSION}


def export_repository(checkpoint_dir: str | Path, out_dir: str | Path, *, reverse_complement_average: bool = False,
                      max_batch_size: int = triton_config.DEFAULT_TRUNK_MAX_BATCH,
                      head_max_batch_size: int = triton_config.DEFAULT_HEAD_MAX_BATCH,
                      preferred_batch_sizes: Sequence[int] | None = None,
                      max_queue_delay_us: int = triton_config.DEFAULT_QUEUE_DELAY_US,
                      trunk_instance_kind: str = "KIND_GPU", parity_windows: int = 4,
                      triton_tag: str | None = None) -> Path:
    """Export a checkpoint into a Triton model repository at `out_dir`; return `out_dir`.

    The card records the exporting torch (`versions.torch`); a TritonCompatWarning says when the Triton release
    `triton_tag` (default: the one set in k8s/components/triton/kustomization.yaml) carries an older libtorch.

    Raises FileNotFoundError / ValueError from `load_checkpoint` for a missing or corrupt checkpoint,
    ExportError for a model that cannot be served (baseline head) and ExportParityError on mismatch.
    """
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {checkpoint_dir} does not exist")
    if max_batch_size < 1 or head_max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    model, card = load_checkpoint(checkpoint_dir)
    if model.cfg.head_kind != "mfd":
        raise ExportError(f"{checkpoint_dir}: head_kind={model.cfg.head_kind!r}; only metadata-conditioned "
                          "('mfd') models can be served (a baseline head has no condition input)")
    model.eval()
    warn_if_triton_too_old(_versions()["torch"], triton_tag)
    codec = card.metadata_codec()
    source_checksums = dict(card.checksums)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as scratch:
        staging = Path(scratch)
        trunk_file = serving.model_file(staging, TRUNK_MODEL)
        head_file = serving.model_file(staging, HEAD_MODEL)
        trunk_file.parent.mkdir(parents=True)
        head_file.parent.mkdir(parents=True)
        with torch.no_grad():
            scripted_trunk = torch.jit.script(ExportedTrunk(model, reverse_complement_average).eval())
            scripted_head = torch.jit.script(ExportedHead(model, codec.width).eval())
        scripted_trunk.save(str(trunk_file))
        scripted_head.save(str(head_file))
        parity = check_parity(model, card, trunk_file, head_file,
                              reverse_complement_average=reverse_complement_average, n_windows=parity_windows)

        trunk = triton_config.trunk_spec(card, max_batch_size=max_batch_size,
                                         preferred_batch_sizes=preferred_batch_sizes,
                                         max_queue_delay_us=max_queue_delay_us, instance_kind=trunk_instance_kind)
        head = triton_config.head_spec(card, max_batch_size=head_max_batch_size)
        # The card's identity in each config: Triton reports it back, and the service refuses a mismatch.
        trunk.parameters = serving.identity_parameters(card.model_name, sha256_file(trunk_file))
        head.parameters = serving.identity_parameters(card.model_name, sha256_file(head_file))
        note = (f"Generated by `python -m training.export` from model {card.model_name!r}; "
                f"reverse_complement_average={reverse_complement_average}.\nDo not edit by hand: re-export.")
        for spec in (trunk, head):
            text = triton_config.render_config(spec, comment=note)
            triton_config.check_config(triton_config.parse_config(text), spec, backend=triton_config.LIBTORCH_BACKEND)
            (staging / spec.name / serving.CONFIG_FILENAME).write_text(text)

        card.reverse_complement_average = bool(reverse_complement_average)
        card.checksums = {serving.model_file_key(name): sha256_file(path)
                          for name, path in ((TRUNK_MODEL, trunk_file), (HEAD_MODEL, head_file))}
        card.versions = {**card.versions, **_versions()}
        card.config = {**card.config, "export": {
            "source_checksums": source_checksums,
            "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "trunk": {"max_batch_size": trunk.max_batch_size, "preferred_batch_sizes": trunk.preferred_batch_sizes,
                      "max_queue_delay_us": trunk.max_queue_delay_us, "instance_kind": trunk.instance_kind},
            "head": {"max_batch_size": head.max_batch_size, "bias_shape": "[K, 1]"},
            "parity": parity,
        }}
        card.save(staging / CARD_FILENAME)
        verify_checksums(card, staging)

        for name in (TRUNK_MODEL, HEAD_MODEL, CARD_FILENAME):   # the models first, the card that names them last
            publish(staging / name, out_dir / name)
    return out_dir


def output_dir(out: Path, name: str | None, prog: str) -> Path | None:
    """Where a command writes a model: `out` itself, or `<out>/<name>/` of a multi-model repository when `--name`
    is given (mfd_common.model_store's rule). A bad name or folder: one line naming it on stderr and None (the
    command exits 2)."""
    if name is None:
        return Path(out)
    try:
        return named_model_dir(out, name)
    except (ModelStoreError, ValueError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return None
