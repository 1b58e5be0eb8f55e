"""Bench layer: a copy of a model repository whose trunk answers at once, to measure everything but the trunk.

The null trunk is a TorchScript module with the real trunk's contract (uint8 tokens [N, seq_len] → float32
features [N, d_tech + d_bio]) that slices the tokens as features: sequence-dependent (so ref and alt differ and
effects are not all zero) but free of compute. What a bench then measures is the service's own work (parsing,
windowing, tokenising, batching, scoring, writing) and its memory. Used by `bench_service --null-trunk` and
`bench_variants` (the 1 M-record streaming run).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path


def null_trunk_repository(source: Path, workdir: Path) -> Path:
    """A copy of `source` whose trunk answers instantly; the card's checksum is updated to match."""
    import torch

    card = json.loads((source / "model_card.json").read_text())
    d = int(card["d_tech"]) + int(card["d_bio"])
    if d > card["seq_len"]:
        raise ValueError("null trunk slices features from the tokens, so needs seq_len >= d_tech + d_bio")

    class NullTrunk(torch.nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.width = width

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, :self.width].float() - 2.0  # sequence-dependent, no compute

    target = workdir / "null_repository"
    shutil.copytree(source, target)
    trunk = target / "mfd_trunk" / "1" / "model.pt"
    torch.jit.script(NullTrunk(d)).save(str(trunk))
    card.setdefault("checksums", {})["mfd_trunk/1/model.pt"] = hashlib.sha256(trunk.read_bytes()).hexdigest()
    (target / "model_card.json").write_text(json.dumps(card, indent=2))
    return target
