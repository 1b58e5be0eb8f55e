"""Training layer (model): the MFD network as the authors built it (HealthML/MFD `IEAquaticDilated`), with their
state-dict names.

    tokens [N, L] uint8 ──one-hot──► stem ─► tower ─► dilated ─► crop ─► pointwise ─► bn_features
        └─ L = positions + seq_order − 1 bases; order 2 → 16 dinucleotide channels × `positions`
           (2177 bases → 2176 positions: `mfd_common.geometry`)
    features f = [f_tech | f_bio]                                                   (N × 2C; technical first)
    condition codes [K, W] ─► metadata_embedding ─► w_tech (K × D_tech), w_bio (K × D_bio)
    logit[n, k] = f_bio[n]·w_bio[k] + f_tech[n]·w_tech[k] + bias[k]

Module and parameter names follow the reference (`stem`, `tower.tower.<l>`, `dilated_residual_block…`,
`pointwise`, `bn_features`, `metadata_embedding.embedding_{biological,technical}…`, `bias`), so an imported
checkpoint loads with `load_state_dict(strict=True)` after dropping its aliases. `bias` is the reference's free
bias per trained track; a never-measured condition gets its bias from `bias_rule` (see `condition_bias`).

Our own additions are options that default to off (the reference): dropout, metadata dropout (`training.model.fit`)
and the bias rule. Everything is TorchScript-scriptable: `training.repository.export` scripts the trunk and the head
separately.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mfd_common.codec import LABELLED_TYPES, MetadataCodec, Variable
from mfd_common.geometry import DINUCLEOTIDE_POSITIONS, ONEHOT_ORDER, bases_for_positions

POOL_LAYERS = 7                       # stem pool + six tower pools: one output position per 2**7 = 128 bp
BIAS_RULES = ("nearest_tracks_mean",)


@dataclass
class ModelConfig:
    """Architecture hyper-parameters; defaults are the reference's (`AquaticDilated` / `IEAquaticDilated`).

    `positions` counts one-hot *positions* (the reference's `seq_len`): order 2 reads `positions + 1` bases
    (`window_bases`: 2177 for 2176). Checkpoints written before the rename store it as `seq_len`: `from_dict`
    reads them.
    """

    positions: int = DINUCLEOTIDE_POSITIONS
    seq_order: int = ONEHOT_ORDER
    channels: int = 768               # C; the latent vector has 2C features
    tower_layers: int = 6             # L1
    dilated_layers: int = 2           # L2
    dilation_rate: float = 1.5        # D: dilation of block l is int(2 * D**l)
    tower_kernel: int = 5
    crop: int = 8
    activation: str = "gelu"          # gelu (tanh approximation) | relu
    biological_subspace_ratio: float = 0.5
    dropout_dilated: float = 0.0      # ours; the reference's defaults are 0
    dropout_pointwise: float = 0.0
    linearly_embed_direct_features: bool = False  # the reference's deprecated direct-variable Linear
    head_kind: str = "mfd"            # "mfd" (metadata-conditioned) or "baseline" (plain linear head)
    bias_rule: str = "nearest_tracks_mean"

    @property
    def window_bases(self) -> int:
        """Bases per input window: `positions` positions of `seq_order`-mers at stride 1."""
        return bases_for_positions(self.positions, self.seq_order)

    @property
    def latent_dim(self) -> int:
        return 2 * self.channels

    @property
    def d_bio(self) -> int:
        return int(self.latent_dim * self.biological_subspace_ratio)

    @property
    def d_tech(self) -> int:
        return self.latent_dim - self.d_bio

    @property
    def bin_size(self) -> int:
        return 2 ** POOL_LAYERS

    def output_positions(self) -> int:
        length = self.positions // 2  # stem pool
        for _ in range(self.tower_layers):
            length //= 2
        return length - 2 * self.crop

    def validate(self) -> None:
        if self.seq_order not in (1, 2):
            raise ValueError(f"model.seq_order must be 1 or 2, got {self.seq_order}")
        if self.channels < 2:
            raise ValueError(f"model.channels must be >= 2, got {self.channels}")
        if self.output_positions() != 1:
            raise ValueError(f"model.positions {self.positions} with crop {self.crop} leaves {self.output_positions()} "
                             f"output positions; the model needs exactly one (e.g. positions 2176, crop 8)")
        widths = tower_widths(self.channels, self.tower_layers)
        if widths[-1] != self.channels:
            raise ValueError(f"model.channels {self.channels}: the tower ends at {widths[-1]} channels, not C")
        if not 0.0 < self.biological_subspace_ratio < 1.0:
            raise ValueError(f"model.biological_subspace_ratio must be in (0, 1), got {self.biological_subspace_ratio}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"model.activation must be gelu or relu, got {self.activation!r}")
        if self.head_kind not in ("mfd", "baseline"):
            raise ValueError(f"model.head_kind must be 'mfd' or 'baseline', got {self.head_kind!r}")
        if self.bias_rule not in BIAS_RULES:
            raise ValueError(f"model.bias_rule must be one of {', '.join(BIAS_RULES)}, got {self.bias_rule!r}")


    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """A config as a checkpoint's card stores it; `seq_len` (the name before `positions`) is read as positions."""
        data = dict(data)
        if "seq_len" in data and "positions" not in data:
            data["positions"] = data.pop("seq_len")
        return cls(**data)


def tower_widths(channels: int, layers: int) -> List[int]:
    """Channel widths at the tower's level boundaries: C/2 growing geometrically to C, each cut with int().

    The float arithmetic is the reference's (`int(in * mult ** l)`), so C=30 gives 15,16,18,21,23,26,30.
    """
    start = channels // 2
    mult = (channels / start) ** (1.0 / layers)
    return [int(start * mult ** level) for level in range(layers + 1)]


class OneHot(nn.Module):
    """uint8 tokens (A,C,G,T,N = 0..4) [N, L] → one-hot [N, 4**order, L − order + 1].

    Order 2: overlapping dinucleotides at stride 1, first base major (AA, AC, …, TT); a position whose pair
    touches an N is all zeros, so an interior N zeroes two positions (the reference's N_max = 0 rule).
    """

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
            onehot = F.one_hot(pair, 17)[..., :16]
        return onehot.transpose(1, 2).float()


class ConvBlock(nn.Module):
    """BatchNorm1d → GELU(tanh) → Conv1d('same', no bias) (→ Dropout); `residual` adds the input back."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, dilation: int = 1, activation: str = "gelu",
                 dropout: float = 0.0, residual: bool = False):
        super().__init__()
        self.residual = residual
        layers: List[nn.Module] = [nn.BatchNorm1d(c_in)]
        layers.append(nn.GELU(approximate="tanh") if activation == "gelu" else nn.ReLU())
        layers.append(nn.Conv1d(c_in, c_out, kernel, padding="same", dilation=dilation, bias=False))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.conv1d_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            return x + self.conv1d_block(x)
        return self.conv1d_block(x)


class ResConvTower(nn.Module):
    """L1 levels of ConvBlock(k=5) → residual ConvBlock(k=1) → MaxPool(2), widths from `tower_widths`."""

    def __init__(self, channels: int, layers: int, kernel: int, activation: str):
        super().__init__()
        widths = tower_widths(channels, layers)
        self.tower = nn.Sequential(*[
            nn.Sequential(
                ConvBlock(widths[level], widths[level + 1], kernel, activation=activation),
                ConvBlock(widths[level + 1], widths[level + 1], 1, activation=activation, residual=True),
                nn.MaxPool1d(2, 2),
            ) for level in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)


class DilatedResidual(nn.Module):
    """x + ConvBlock_k1(ConvBlock_k3(x, dilation)); inner width C (the reference's channel_multiplier 1)."""

    def __init__(self, channels: int, dilation: int, activation: str, dropout: float):
        super().__init__()
        self.conv1d_block_1 = ConvBlock(channels, channels, 3, dilation=dilation, activation=activation)
        self.conv1d_block_2 = ConvBlock(channels, channels, 1, activation=activation, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1d_block_2(self.conv1d_block_1(x))


class DilatedResidualStack(nn.Module):
    def __init__(self, channels: int, layers: int, rate: float, activation: str, dropout: float):
        super().__init__()
        self.dilatedresidualblock = nn.Sequential(*[
            DilatedResidual(channels, int(2 * rate ** level), activation, dropout) for level in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dilatedresidualblock(x)


def reverse_complement_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """uint8 tokens [N, L] → their reverse complements (A↔T, C↔G, N stays), on the tokens' device.

    The torch twin of `mfd_common.tokens.reverse_complement` (numpy), for evaluation and the exported trunk.
    """
    complement = torch.tensor([3, 2, 1, 0, 4], dtype=torch.uint8, device=tokens.device)
    return complement[tokens.long()].flip([1])


# ---- metadata → output weights -----------------------------------------------------------------------------

class LinearScaling(nn.Module):
    """`rescale` (one learned scalar) or `rescale_indep` (one per column): x · w."""

    def __init__(self, width: int, independent: bool):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(width if independent else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights


def intermediate_module(variable: Variable) -> nn.Module:
    """The reference's per-column transform: identity, linear, a 3-layer `embed` MLP, or a rescaling."""
    d, k = variable.width, variable.out_width
    if variable.intermediate is None:
        return nn.Identity()
    if variable.intermediate == "linear":
        return nn.Linear(d, k)
    if variable.intermediate == "embed":
        return nn.Sequential(nn.Linear(d, 2 * k), nn.ReLU(), nn.Linear(2 * k, 2 * k), nn.ReLU(), nn.Linear(2 * k, k))
    if variable.intermediate in ("rescale", "rescale_indep"):
        if variable.type != "category":
            raise ValueError(f"metadata variable {variable.name!r}: intermediate {variable.intermediate!r} is only "
                             f"meaningful for category variables")
        return LinearScaling(d, variable.intermediate == "rescale_indep")
    raise ValueError(f"metadata variable {variable.name!r}: unknown intermediate {variable.intermediate!r}")


class ColumnEmbedding(nn.Module):
    def __init__(self, variable: Variable):
        super().__init__()
        self.embedding = intermediate_module(variable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class GroupEmbedding(nn.Module):
    """One group's weights: direct variables own their coordinates; the rest come from an MLP of the interacting.

        w_g = concat(direct column embeddings, in mapping order ; MLP_g(concat(interact column embeddings)))
        MLP_g = Linear(Σ, 2·out_dim) − ReLU − Linear(2·out_dim, 2·out_dim) − ReLU − Linear(2·out_dim, D_g − Σ_direct)
    """

    def __init__(self, codec: MetadataCodec, group: str, size: int, linear_direct: bool = False):
        super().__init__()
        layout = codec.groups[group]
        self.direct_names: List[str] = list(layout.direct)
        self.interact_names: List[str] = list(layout.interact)
        if not self.interact_names:
            raise ValueError(f"metadata group {group!r} needs at least one interact variable")
        self.column_embeddings = nn.ModuleDict({n: ColumnEmbedding(codec.by_name[n]) for n in layout.variables})
        self.spans: Dict[str, List[int]] = {n: list(codec.offsets[n]) for n in layout.variables}
        out = {n: codec.by_name[n].out_width for n in layout.variables}
        self.mappings_direct = nn.ModuleDict({
            n: (nn.Linear(out[n], out[n]) if linear_direct else nn.Identity()) for n in self.direct_names})
        d_direct = sum(out[n] for n in self.direct_names)
        if d_direct >= size:
            raise ValueError(f"metadata group {group!r}: direct variables take {d_direct} coordinates but the "
                             f"{group} subspace has only {size}")
        d_in, hidden = sum(out[n] for n in self.interact_names), 2 * layout.out_dim
        self.mapping_interact = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                              nn.ReLU(), nn.Linear(hidden, size - d_direct))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        columns: Dict[str, torch.Tensor] = {}
        for name, embedding in self.column_embeddings.items():
            span = self.spans[name]
            columns[name] = embedding(codes[:, span[0]:span[1]])
        parts: List[torch.Tensor] = []
        for name, mapping in self.mappings_direct.items():
            parts.append(mapping(columns[name]))
        parts.append(self.mapping_interact(torch.cat([columns[n] for n in self.interact_names], dim=1)))
        return torch.cat(parts, dim=1)


class MetadataEmbedding(nn.Module):
    """Condition codes [K, W] → (w_tech [K, D_tech], w_bio [K, D_bio]); each group sees only its own variables."""

    def __init__(self, codec: MetadataCodec, d_tech: int, d_bio: int, linear_direct: bool = False):
        super().__init__()
        self.embedding_biological = GroupEmbedding(codec, "biological", d_bio, linear_direct)
        self.embedding_technical = GroupEmbedding(codec, "technical", d_tech, linear_direct)

    def forward(self, codes: torch.Tensor) -> List[torch.Tensor]:
        return [self.embedding_technical(codes), self.embedding_biological(codes)]


def condition_bias(codes: torch.Tensor, track_codes: torch.Tensor, bias: torch.Tensor,
                   starts: List[int], ends: List[int]) -> torch.Tensor:
    """Bias for arbitrary conditions by the `nearest_tracks_mean` rule: [K, W] → [K].

    The reference has a free bias per trained track and none for a never-measured combination. Our documented
    rule: count, per trained track, the categorical metadata variables (`category`, `date.year`; the spans given)
    whose codes equal the condition's; take the tracks with the highest count and average their biases. A
    condition equal to one trained track's labels gets that track's bias (several identical tracks: their mean).
    Numbers do not count: a left-out number takes the mean code, which would "agree" with every track whose value
    is the mean. A left-out category takes fractional mean codes, which agree with no single track.
    """
    agree = torch.zeros(codes.shape[0], track_codes.shape[0], dtype=codes.dtype, device=codes.device)
    for i in range(len(starts)):
        a = codes[:, starts[i]:ends[i]].unsqueeze(1)
        b = track_codes[:, starts[i]:ends[i]].unsqueeze(0)
        agree = agree + (a == b).all(dim=2).to(codes.dtype)
    best = agree.max(dim=1, keepdim=True).values
    nearest = (agree == best).to(bias.dtype)
    return (nearest @ bias) / nearest.sum(dim=1)


# ---- the model ---------------------------------------------------------------------------------------------

class MFDModel(nn.Module):
    """Trunk + feature BatchNorm + metadata-conditioned head (or a plain linear head for the baseline)."""

    def __init__(self, cfg: ModelConfig, codec: MetadataCodec, n_tracks: int,
                 track_codes: Optional[torch.Tensor] = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c, act = cfg.channels, cfg.activation
        self.d_tech, self.d_bio = cfg.d_tech, cfg.d_bio
        self.onehot = OneHot(cfg.seq_order)
        self.stem = nn.Sequential(
            nn.Conv1d(4 ** cfg.seq_order, c // 2, 15, padding="same"),
            ConvBlock(c // 2, c // 2, 1, activation=act, residual=True),
            nn.MaxPool1d(2, 2))
        self.tower = ResConvTower(c, cfg.tower_layers, cfg.tower_kernel, act)
        self.dilated_residual_block = DilatedResidualStack(c, cfg.dilated_layers, cfg.dilation_rate, act,
                                                           cfg.dropout_dilated)
        self.pointwise = ConvBlock(c, cfg.latent_dim, 1, activation=act, dropout=cfg.dropout_pointwise)
        self.bn_features = nn.BatchNorm1d(cfg.latent_dim)
        if cfg.head_kind == "mfd":
            self.metadata_embedding: nn.Module = MetadataEmbedding(codec, self.d_tech, self.d_bio,
                                                                   cfg.linearly_embed_direct_features)
        else:
            self.metadata_embedding = nn.Linear(cfg.latent_dim, n_tracks)
        self.bias = nn.Parameter(torch.zeros(n_tracks))
        if track_codes is None:
            track_codes = torch.zeros(n_tracks, codec.width)
        self.register_buffer("track_codes", torch.as_tensor(track_codes, dtype=torch.float32).clone())
        labelled = [v for v in codec.variables if v.type in LABELLED_TYPES]  # what the bias rule compares
        self.variable_starts: List[int] = [codec.offsets[v.name][0] for v in labelled]
        self.variable_ends: List[int] = [codec.offsets[v.name][1] for v in labelled]

    def trunk_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Latent vector before the feature BatchNorm: [N, 2C]."""
        x = self.stem(self.onehot(tokens))                       # [N, C/2, positions/2]
        x = self.dilated_residual_block(self.tower(x))           # [N, C, 17]
        x = x[:, :, self.cfg.crop:x.shape[2] - self.cfg.crop]    # [N, C, 1]
        return self.pointwise(x).flatten(1)                      # [N, 2C]

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Batch-normalised latent vector, technical features first: [N, D_tech + D_bio]."""
        return self.bn_features(self.trunk_features(tokens))

    def head_weights(self, codes: torch.Tensor) -> List[torch.Tensor]:
        """Condition codes [K, W] → [w_tech, w_bio, bias by the bias rule]."""
        w_tech, w_bio = self.metadata_embedding(codes)
        bias = condition_bias(codes, self.track_codes, self.bias, self.variable_starts, self.variable_ends)
        return [w_tech, w_bio, bias]

    def forward(self, tokens: torch.Tensor, codes: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Logits for the trained tracks (codes default to the tracks' own) with their decomposition."""
        f = self.features(tokens)
        if self.cfg.head_kind == "baseline":
            logits = self.metadata_embedding(f) + self.bias
            return {"logits": logits, "logits_bio": logits, "logits_tech": torch.zeros_like(logits), "features": f}
        w_tech, w_bio = self.metadata_embedding(self.track_codes if codes is None else codes)
        return {"features": f, **apply_condition_weights(f, self.d_tech, w_tech, w_bio, self.bias)}


def apply_condition_weights(f: torch.Tensor, d_tech: int, w_tech: torch.Tensor, w_bio: torch.Tensor,
                            bias: torch.Tensor) -> Dict[str, torch.Tensor]:
    """logit = f_bio·w_bio + f_tech·w_tech + b for every (window, condition) pair."""
    logits_tech = f[:, :d_tech] @ w_tech.T
    logits_bio = f[:, d_tech:] @ w_bio.T
    return {"logits": logits_bio + logits_tech + bias, "logits_bio": logits_bio, "logits_tech": logits_tech}


def trunk_parameter_count(model: MFDModel) -> int:
    """Parameters of the trunk as the reference counts it (stem → pointwise, without bn_features)."""
    parts = (model.stem, model.tower, model.dilated_residual_block, model.pointwise)
    return sum(p.numel() for part in parts for p in part.parameters())
