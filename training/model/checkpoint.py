"""Training layer (model): checkpoints: a folder with `model.safetensors` (weights only, no pickle) and
`model_card.json`.

The card alone is enough to rebuild the architecture (model config, metadata codec, tracks), so export and
evaluation never need the training config or the data. Optimizer state for resuming lives beside them in
`train_state.pt`, loaded with `weights_only=True`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mfd_common.card import CARD_FILENAME, ModelCard, sha256_file, verify_checksums
from mfd_common.codec import MetadataCodec
from mfd_common.publish import staged

from .network import MFDModel, ModelConfig

WEIGHTS_FILENAME = "model.safetensors"
TRAIN_STATE_FILENAME = "train_state.pt"


def save_checkpoint(model: MFDModel, card: ModelCard, directory: str | Path,
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write weights, card (with the weights' sha256) and optionally the resumable training state."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with staged(directory / WEIGHTS_FILENAME) as work:
        save_file(state, str(work))
    card.config = {**card.config, "model": dataclasses.asdict(model.cfg)}
    card.d_tech, card.d_bio = model.d_tech, model.d_bio
    card.seq_len, card.onehot_order = model.cfg.window_bases, model.cfg.seq_order   # seq_len: bases
    card.checksums = {WEIGHTS_FILENAME: sha256_file(directory / WEIGHTS_FILENAME)}
    if train_state is not None:
        save_train_state(directory, train_state)
    card.save(directory / CARD_FILENAME)
    return directory


def save_train_state(directory: str | Path, train_state: dict[str, Any]) -> None:
    """Write the resumable state atomically, so a crash mid-write never leaves a torn file behind."""
    with staged(Path(directory) / TRAIN_STATE_FILENAME) as work:
        torch.save(train_state, work)


def load_checkpoint(directory: str | Path, map_location: str = "cpu") -> tuple[MFDModel, ModelCard]:
    """Rebuild the model from its card and load the weights (checksum-verified)."""
    directory = Path(directory)
    card_path = directory / CARD_FILENAME
    if not card_path.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint: {CARD_FILENAME} is missing")
    card = ModelCard.load(card_path)
    verify_checksums(card, directory)
    cfg = ModelConfig.from_dict(card.config["model"])
    codec = MetadataCodec.from_dict(card.codec)
    model = MFDModel(cfg, codec, n_tracks=len(card.tracks))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILENAME), device=map_location))
    return model.eval(), card


def load_train_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / TRAIN_STATE_FILENAME
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
