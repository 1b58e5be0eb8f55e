"""Training layer (reference): read a PyTorch Lightning checkpoint written by the authors' code (HealthML/MFD
`IEAquaticDilated`), safely.

    read_reference_checkpoint(path) → ReferenceCheckpoint(state_dict, hparams, df_raw: Frame, source info)
    model_config(hparams) → training.model.network.ModelConfig (hparams older checkpoints lack get the reference defaults)

The file is a torch zip whose pickle also holds `hyper_parameters['metadata_loader']`, their pickled
`MetadataLoader` with pandas frames. It is read with `torch.load(weights_only=True)` and an explicit allow-list of
stand-ins (`training.reference.restricted_pickle`): nothing in the file is imported or executed; a global off the list is
refused with `ReferenceImportError` naming it. Never `weights_only=False`, never `pickle.load`.
"""
from __future__ import annotations

import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfd_common.card import sha256_file

from ..model.network import ModelConfig
from .restricted_pickle import ALLOW_LIST, Frame, MetadataLoader, PickleContentError, unwrap

LIGHTNING_KEYS = ("state_dict", "hyper_parameters")

# Signature defaults of their `AquaticDilated.__init__` and `_IndependentEmbeddingsMixin.__init__`: Lightning
# stores the arguments a model was built with, so a checkpoint from an older version of their code lacks the
# arguments added since, which then had these values. (Note seq_order: 1 in their signature.)
REFERENCE_DEFAULTS: dict[str, Any] = {
    "seq_len": 2176, "C": 768, "C_embed": None, "L1": 6, "L2": 2, "D": 1.5, "activation": "gelu",
    "tower_kernel_size": 5, "dilated_residual_dropout": 0.0, "pointwise_dropout": 0.0, "out_pool_type": None,
    "seq_order": 1, "crop": 8,
    "biological_subspace_ratio": 0.5, "biological_subspace_n": None, "technical_subspace_n": None,
    "linearly_embed_direct_features": False, "labels_encoder": False, "learn_signal_to_noise": False,
}
# Their hparam → our ModelConfig field (their `seq_len` counts one-hot positions: our `positions`).
CONFIG_FIELDS = {
    "seq_len": "positions", "seq_order": "seq_order", "C": "channels", "L1": "tower_layers", "L2": "dilated_layers",
    "D": "dilation_rate", "tower_kernel_size": "tower_kernel", "crop": "crop", "activation": "activation",
    "biological_subspace_ratio": "biological_subspace_ratio", "dilated_residual_dropout": "dropout_dilated",
    "pointwise_dropout": "dropout_pointwise", "linearly_embed_direct_features": "linearly_embed_direct_features",
}


class ReferenceImportError(ValueError):
    """The checkpoint (or its mapping) cannot be imported; the message names the file and the key."""


@dataclass
class ReferenceCheckpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    hparams: dict[str, Any]
    df_raw: Frame
    source: dict[str, Any]


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _safe_load(path: Path) -> Any:
    if not zipfile.is_zipfile(path):
        raise ReferenceImportError(f"{path}: not a Lightning checkpoint (not a torch zip file)")
    try:
        with torch.serialization.safe_globals(ALLOW_LIST):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = _REFUSED_GLOBAL.search(str(err))
        if match:
            raise ReferenceImportError(f"{path}: refusing to unpickle {match.group(1)}: not on the allow-list "
                                       f"(only tensors, plain values and the MetadataLoader's pandas frames "
                                       f"are read)") from None
        detail = str(err).strip().splitlines()[-1]
        raise ReferenceImportError(f"{path}: refusing to unpickle: {detail}") from None
    except PickleContentError as err:
        raise ReferenceImportError(f"{path}: unsupported content in hyper_parameters: {err}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise ReferenceImportError(f"{path}: not a readable torch checkpoint: {err}") from None


def read_reference_checkpoint(path: str | Path) -> ReferenceCheckpoint:
    """Load and check the Lightning structure; return the state dict, hparams and the track table."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceImportError(f"{path}: checkpoint file does not exist")
    data = _safe_load(path)
    if not isinstance(data, dict):
        raise ReferenceImportError(f"{path}: not a Lightning checkpoint (top level is {type(data).__name__})")
    for key in LIGHTNING_KEYS:
        if key not in data:
            raise ReferenceImportError(f"{path}: not a Lightning checkpoint: key {key!r} is missing")
    state_dict, hparams = data["state_dict"], data["hyper_parameters"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ReferenceImportError(f"{path}: state_dict is not a mapping of tensors")
    if not isinstance(hparams, dict):
        raise ReferenceImportError(f"{path}: hyper_parameters is not a mapping")
    if not any(k.startswith("metadata_embedding.") for k in state_dict) or "bn_features.weight" not in state_dict:
        kind = "a baseline (AquaticDilated) checkpoint" if "head.weight" in state_dict else "an unknown model"
        raise ReferenceImportError(f"{path}: not an IEAquaticDilated checkpoint: state_dict has no "
                                   f"metadata_embedding.* / bn_features.* keys (looks like {kind})")
    loader = hparams.get("metadata_loader")
    if not isinstance(loader, MetadataLoader) or not isinstance(unwrap(getattr(loader, "df_raw", None)), Frame):
        raise ReferenceImportError(f"{path}: hyper_parameters.metadata_loader is missing or has no df_raw table "
                                   f"(the only record of the track order)")
    source = {
        "file": path.name, "sha256": sha256_file(path),
        "lightning_version": data.get("pytorch-lightning_version"),
        "epoch": data.get("epoch"), "global_step": data.get("global_step"),
        "hparams": {k: json_safe(v) for k, v in hparams.items() if k != "metadata_loader"},
    }
    return ReferenceCheckpoint(path, dict(state_dict), dict(hparams), unwrap(loader.df_raw), source)


def json_safe(value: Any) -> Any:
    """Plain JSON for the card: NaN/inf → null, numpy and tensors → python, other objects → their repr."""
    value = unwrap(value)
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.generic, np.ndarray)):
        return json_safe(value.tolist())
    if isinstance(value, torch.Tensor):
        return json_safe(value.tolist()) if value.numel() <= 64 else f"tensor{list(value.shape)}"
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, Frame):
        return f"table of {len(value)} rows"
    return repr(value)


def model_config(hparams: dict[str, Any], source: str = "checkpoint") -> ModelConfig:
    """Their hparams → our ModelConfig; features our model does not implement are refused by name."""
    h = {**REFERENCE_DEFAULTS, **{k: v for k, v in hparams.items() if k in REFERENCE_DEFAULTS}}
    where = f"{source}: hyper_parameters"
    if h["learn_signal_to_noise"]:
        raise ReferenceImportError(f"{where}.learn_signal_to_noise is True: per-track signal-to-noise weights are "
                                   f"not supported")
    if h["labels_encoder"]:
        raise ReferenceImportError(f"{where}.labels_encoder is True: a labels-encoder model has no sequence trunk")
    if h["biological_subspace_ratio"] is None:
        raise ReferenceImportError(f"{where}.biological_subspace_ratio is None (learned or explicit subspace "
                                   f"sizes): only a ratio is supported")
    for key in ("biological_subspace_n", "technical_subspace_n"):
        if h[key] is not None:
            raise ReferenceImportError(f"{where}.{key} is set: only biological_subspace_ratio is supported")
    if h["C_embed"] not in (None, 2 * h["C"]):
        raise ReferenceImportError(f"{where}.C_embed is {h['C_embed']}: only the default 2·C "
                                   f"({2 * h['C']}) is supported")
    try:
        cfg = ModelConfig(**{ours: h[theirs] for theirs, ours in CONFIG_FIELDS.items()})
        cfg.dilation_rate = float(cfg.dilation_rate)
        cfg.validate()
    except (TypeError, ValueError) as err:
        raise ReferenceImportError(f"{where}: unsupported architecture: {err}") from None
    return cfg


def n_classes(checkpoint: ReferenceCheckpoint) -> int:
    """Number of tracks; hparams, df_raw and the bias vector must agree on it."""
    n = checkpoint.hparams.get("n_classes")
    rows = len(checkpoint.df_raw)
    bias = checkpoint.state_dict.get("bias")
    where = checkpoint.path
    if bias is None or bias.dim() != 1:
        raise ReferenceImportError(f"{where}: state_dict key 'bias' (one free bias per track) is missing")
    if not isinstance(n, int) or n != rows or n != bias.shape[0]:
        raise ReferenceImportError(f"{where}: hyper_parameters.n_classes={n!r}, metadata_loader.df_raw has "
                                   f"{rows} rows and state_dict 'bias' has {bias.shape[0]}: they must agree")
    return n
