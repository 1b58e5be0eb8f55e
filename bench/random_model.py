"""Bench helper: random-weight MFD models of any width, as checkpoints and exported repositories.

Throughput does not depend on the weights, so benches build the model they time instead of training one; the
training code builds, saves and exports it, exactly as a trained model would be. `calibrate_batchnorm` gives the
BatchNorm layers running statistics from a few training-mode passes: with a fresh layer's statistics every layer is
mis-scaled and the features barely depend on the sequence (std across windows ~1e-5), which would flatter
low-precision comparisons and let tests that mix up windows pass. The tests' tiny models use it too (bench never
imports from tests/).
"""
from __future__ import annotations

from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def calibrate_batchnorm(model: torch.nn.Module, window_bases: int, *, passes: int = 3, batch: int = 16) -> None:
    """Replace every BatchNorm's running statistics by cumulative averages over `passes` random-token batches."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: the default momentum would leave them near their initial values
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model.features(torch.randint(0, 5, (batch, window_bases), dtype=torch.uint8))
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def random_checkpoint(channels: int, directory: Path, *, template: Path = REPO_ROOT / "model_repository",
                      onehot_order: int = 2, seed: int = 0) -> Path:
    """A random-weight model `channels` wide with the metadata schema and tracks of `template`'s card, saved as a
    training checkpoint in `directory`, BatchNorm calibrated."""
    from mfd_common.card import ModelCard, Track
    from training.model.checkpoint import save_checkpoint
    from training.model.network import MFDModel, ModelConfig

    torch.manual_seed(seed)
    source = ModelCard.load(template / "model_card.json")
    codec = source.metadata_codec()
    rows = [t.metadata for t in source.tracks]
    cfg = ModelConfig(channels=channels, seq_order=onehot_order)
    model = MFDModel(cfg, codec, n_tracks=len(rows),
                     track_codes=torch.as_tensor(codec.encode_many(rows, strict=False)))
    calibrate_batchnorm(model, cfg.window_bases)
    card = ModelCard(model_name=f"bench-random-{channels}", seq_len=cfg.window_bases, onehot_order=cfg.seq_order,
                     d_tech=cfg.d_tech, d_bio=cfg.d_bio, codec=codec.to_dict(),
                     tracks=[Track(id=t.id, metadata=t.metadata, bias=0.0) for t in source.tracks],
                     versions={"torch": torch.__version__})
    return Path(save_checkpoint(model, card, directory))


def random_repository(channels: int, workdir: Path, *, template: Path = REPO_ROOT / "model_repository") -> Path:
    """`random_checkpoint`, exported to `workdir/repository` (TorchScript, parity-checked by the export)."""
    from training.repository.export import export_repository

    checkpoint = random_checkpoint(channels, workdir / "ckpt", template=template)
    return Path(export_repository(checkpoint, workdir / "repository"))
