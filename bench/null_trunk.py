"""Bench layer: a copy of a model repository whose trunk answers at once, to measure everything but the trunk.

The null trunk is a TorchScript module with the real trunk's contract (uint8 tokens [N, window bases] → float32
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

from mfd_common.card import CARD_FILENAME, TRUNK_MODEL
from mfd_common.serving import model_file, model_file_key


def null_trunk_repository(source: Path, workdir: Path) -> Path:
    """A copy of `source` whose trunk answers instantly; the card's checksum is updated to match."""
    import torch

    card = json.loads((source / CARD_FILENAME).read_text())   # as JSON: every field is written back unchanged
    d = int(card["d_tech"]) + int(card["d_bio"])
    if d > card["seq_len"]:   # the card's window in bases (`ModelCard.window_bases`)
        raise ValueError("null trunk slices features from the tokens, so needs a window of >= d_tech + d_bio bases")

    class NullTrunk(torch.nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.width = width

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, :self.width].float() - 2.0  # sequence-dependent, no compute

    target = workdir / "null_repository"
    shutil.copytree(source, target)
    trunk = model_file(target, TRUNK_MODEL)
    torch.jit.script(NullTrunk(d)).save(str(trunk))
    card.setdefault("checksums", {})[model_file_key(TRUNK_MODEL)] = hashlib.sha256(trunk.read_bytes()).hexdigest()
    (target / CARD_FILENAME).write_text(json.dumps(card, indent=2))
    return target
