"""The MFD model: a Basenji2-style trunk, a split latent space and metadata-conditioned output weights.

    tokens [N, L] uint8 ──one-hot──► trunk ──► BatchNorm ──► f = [f_tech | f_bio]      (N × D)
    track metadata codes [K, C] ──► MetadataHead ──► w_tech (K × D_tech), w_bio (K × D_bio), b (K)
    logit[n, k] = f_bio[n]·w_bio[k] + f_tech[n]·w_tech[k] + b[k]

Everything here is TorchScript-scriptable: `training.export` scripts the trunk and the head separately so the
GPU serves the trunk (condition-independent, batches perfectly) and conditions are applied per request.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from mfd_common.codec import MetadataCodec

POOL_LAYERS = 7  # stem pool + six tower pools: one output position per 128 bp


@dataclass
class ModelConfig:
    """Architecture hyper-parameters; defaults follow the paper (C=768 → latent 1536, 2176-bp windows)."""

    seq_len: int = 2176
    onehot_order: int = 2
    channels: int = 768          # C; the latent vector has 2C features
    stem_kernel: int = 15
    tower_layers: int = 6        # L1 residual conv blocks, each followed by max-pool 2
    dilated_layers: int = 2      # L2 dilated residual blocks
    dropout: float = 0.1
    tech_ratio: float = 0.5      # share of the latent space that is technical
    head_kind: str = "mfd"       # "mfd" (metadata-conditioned) or "baseline" (plain linear head)

    @property
    def latent_dim(self) -> int:
        return 2 * self.channels

    @property
    def d_tech(self) -> int:
        return int(round(self.latent_dim * self.tech_ratio))

    @property
    def d_bio(self) -> int:
        return self.latent_dim - self.d_tech

    @property
    def bin_size(self) -> int:
        return 2 ** POOL_LAYERS

    def validate(self) -> None:
        if self.onehot_order not in (1, 2):
            raise ValueError(f"model.onehot_order must be 1 or 2, got {self.onehot_order}")
        positions, rest = divmod(self.seq_len, self.bin_size)
        if rest or positions % 2 == 0:
            raise ValueError(f"model.seq_len must be an odd multiple of {self.bin_size} (e.g. 2176 = 17×128), "
                             f"got {self.seq_len}")
        if self.tower_layers != POOL_LAYERS - 1:
            raise ValueError(f"model.tower_layers must be {POOL_LAYERS - 1} (one output bin per {self.bin_size} bp)")
        if not 0.0 < self.tech_ratio < 1.0:
            raise ValueError(f"model.tech_ratio must be in (0, 1), got {self.tech_ratio}")
        if self.head_kind not in ("mfd", "baseline"):
            raise ValueError(f"model.head_kind must be 'mfd' or 'baseline', got {self.head_kind!r}")


class OneHot(nn.Module):
    """uint8 tokens (A,C,G,T,N = 0..4) → one-hot [N, 4**order, L]; N (and any pair touching N) → zeros."""

    def __init__(self, order: int):
        super().__init__()
        self.order = order

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        codes = tokens.long()
        if self.order == 1:
            onehot = F.one_hot(codes, 5)[..., :4]
        else:
            left, right = codes[:, :-1], codes[:, 1:]
            pair = torch.where((left < 4) & (right < 4), left * 4 + right, torch.full_like(left, 16))
            pair = torch.cat([pair, torch.full_like(pair[:, :1], 16)], dim=1)  # last base has no right partner
            onehot = F.one_hot(pair, 17)[..., :16]
        return onehot.transpose(1, 2).float()


class ConvBlock(nn.Sequential):
    """Basenji2's pre-activation block: BatchNorm → GELU → Conv1d (→ Dropout)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__(
            nn.BatchNorm1d(c_in),
            nn.GELU(),
            nn.Conv1d(c_in, c_out, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation),
            nn.Dropout(dropout),
        )


class Residual(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


def tower_channels(channels: int, layers: int) -> List[int]:
    """Geometric growth from C/2 to C over the tower, rounded to multiples of 8 (as in Basenji2)."""
    start = channels // 2
    growth = (channels / start) ** (1.0 / layers)
    return [int(round(start * growth ** (i + 1) / 8) * 8) or 8 for i in range(layers)]


class Trunk(nn.Module):
    """Sequence window → latent vector for its central 128-bp bin (stem, tower, dilated blocks, crop, pointwise)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        in_channels = 4 ** cfg.onehot_order
        stem_channels = cfg.channels // 2
        self.onehot = OneHot(cfg.onehot_order)
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, stem_channels, cfg.stem_kernel, padding=cfg.stem_kernel // 2),
            Residual(ConvBlock(stem_channels, stem_channels, 1)),
            nn.MaxPool1d(2),
        )
        tower: List[nn.Module] = []
        c_in = stem_channels
        for c_out in tower_channels(cfg.channels, cfg.tower_layers):
            tower += [ConvBlock(c_in, c_out, 5), Residual(ConvBlock(c_out, c_out, 1)), nn.MaxPool1d(2)]
            c_in = c_out
        self.tower = nn.Sequential(*tower)
        self.dilated = nn.Sequential(*[
            Residual(nn.Sequential(
                ConvBlock(c_in, c_in // 2, 3, dilation=2 ** (i + 1)),
                ConvBlock(c_in // 2, c_in, 1, dropout=cfg.dropout),
            ))
            for i in range(cfg.dilated_layers)
        ])
        self.crop = (cfg.seq_len // cfg.bin_size) // 2
        self.pointwise = ConvBlock(c_in, cfg.latent_dim, 1, dropout=cfg.dropout / 2)
        self.activation = nn.GELU()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.onehot(tokens))
        x = self.dilated(self.tower(x))
        x = x[:, :, self.crop:x.shape[2] - self.crop]
        return self.activation(self.pointwise(x)).mean(dim=2)


class GroupEmbedding(nn.Module):
    """One metadata group (biological or technical) → its group vector.

    Direct variables pass through their intermediate transform and are concatenated as they are; interacting
    variables are concatenated and mixed by one shared layer, so e.g. biosample × life stage can interact.
    """

    def __init__(self, codec: MetadataCodec, group: str):
        super().__init__()
        layout = codec.groups[group]
        self.direct_slices: List[List[int]] = [list(codec.offsets[n]) for n in layout.direct]
        self.interact_slices: List[List[int]] = [list(codec.offsets[n]) for n in layout.interact]
        self.direct = nn.ModuleList([_intermediate(codec, n) for n in layout.direct])
        self.interact = nn.ModuleList([_intermediate(codec, n) for n in layout.interact])
        interact_width = sum(codec.by_name[n].out_width for n in layout.interact)
        self.has_interact = interact_width > 0
        self.mix = nn.Sequential(nn.Linear(max(interact_width, 1), layout.out_dim), nn.GELU())
        self.out_dim = sum(codec.by_name[n].out_width for n in layout.direct) + (layout.out_dim if self.has_interact else 0)
        if self.out_dim == 0:
            raise ValueError(f"metadata group {group!r} has no variables")

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        parts: List[torch.Tensor] = []
        for i, layer in enumerate(self.direct):
            span = self.direct_slices[i]
            parts.append(layer(codes[:, span[0]:span[1]]))
        if self.has_interact:
            mixed: List[torch.Tensor] = []
            for j, interact_layer in enumerate(self.interact):
                span = self.interact_slices[j]
                mixed.append(interact_layer(codes[:, span[0]:span[1]]))
            parts.append(self.mix(torch.cat(mixed, dim=1)))
        return torch.cat(parts, dim=1)


def _intermediate(codec: MetadataCodec, name: str) -> nn.Module:
    variable = codec.by_name[name]
    if variable.intermediate == "embed":
        return nn.Linear(variable.width, variable.intermediate_dim, bias=False)
    return nn.Identity()


class MetadataHead(nn.Module):
    """Condition codes [K, C] → output weights (w_tech [K, D_tech], w_bio [K, D_bio]) and bias [K].

    w_bio depends on biological metadata only and w_tech on technical metadata only; that is what lets a
    request swap technical conditions while keeping the biological read-out fixed.
    """

    def __init__(self, codec: MetadataCodec, d_tech: int, d_bio: int):
        super().__init__()
        self.bio = GroupEmbedding(codec, "biological")
        self.tech = GroupEmbedding(codec, "technical")
        self.to_w_bio = nn.Linear(self.bio.out_dim, d_bio)
        self.to_w_tech = nn.Linear(self.tech.out_dim, d_tech)
        self.to_bias = nn.Linear(self.bio.out_dim + self.tech.out_dim, 1)
        for layer in (self.to_w_bio, self.to_w_tech):  # keep initial logits O(1) for any latent size
            nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features * layer.out_features))
            nn.init.zeros_(layer.bias)

    def forward(self, codes: torch.Tensor) -> List[torch.Tensor]:
        g_bio, g_tech = self.bio(codes), self.tech(codes)
        bias = self.to_bias(torch.cat([g_bio, g_tech], dim=1)).squeeze(1)
        return [self.to_w_tech(g_tech), self.to_w_bio(g_bio), bias]


class MFDModel(nn.Module):
    """Trunk + feature BatchNorm + metadata-conditioned head (or a plain linear head for the baseline)."""

    def __init__(self, cfg: ModelConfig, codec: MetadataCodec, n_tracks: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.d_tech, self.d_bio = cfg.d_tech, cfg.d_bio
        self.trunk = Trunk(cfg)
        self.feature_norm = nn.BatchNorm1d(cfg.latent_dim, affine=False)
        if cfg.head_kind == "mfd":
            self.head: nn.Module = MetadataHead(codec, self.d_tech, self.d_bio)
        else:
            self.head = nn.Linear(cfg.latent_dim, n_tracks)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Batch-normalised latent vector, technical features first: [N, D_tech + D_bio]."""
        return self.feature_norm(self.trunk(tokens))

    def forward(self, tokens: torch.Tensor, codes: torch.Tensor) -> Dict[str, torch.Tensor]:
        f = self.features(tokens)
        if self.cfg.head_kind == "baseline":
            logits = self.head(f)
            return {"logits": logits, "logits_bio": logits, "logits_tech": torch.zeros_like(logits), "features": f}
        return {"features": f, **apply_condition_weights(f, self.d_tech, *self.head(codes))}


def apply_condition_weights(f: torch.Tensor, d_tech: int, w_tech: torch.Tensor, w_bio: torch.Tensor,
                            bias: torch.Tensor) -> Dict[str, torch.Tensor]:
    """logit = f_bio·w_bio + f_tech·w_tech + b for every (window, condition) pair."""
    logits_tech = f[:, :d_tech] @ w_tech.T
    logits_bio = f[:, d_tech:] @ w_bio.T
    return {"logits": logits_bio + logits_tech + bias, "logits_bio": logits_bio, "logits_tech": logits_tech}
