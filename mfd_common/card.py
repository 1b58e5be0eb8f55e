"""Contract (mfd_common): the model card, all a consumer needs to use an exported MFD model without training code.

It travels as `model_card.json` next to the checkpoint and at the root of the Triton model repository.
Checksums let the service refuse a repository whose weights do not match the card they were exported with.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .codec import MetadataCodec
from .publish import write_atomically

CARD_FORMAT_VERSION = 2  # 2: reference codec, per-track bias, seq_len in bases
CARD_FILENAME = "model_card.json"

# Tensor names of the exported models; Triton configs, the service and the tests all use these.
# Triton's libtorch backend maps outputs by the `<name>__<index>` convention, so every name carries its index.
TRUNK_MODEL = "mfd_trunk"
HEAD_MODEL = "mfd_head"
TRUNK_INPUT = "TOKENS__0"            # uint8 [N, L]
TRUNK_OUTPUT = "FEATURES__0"         # float32 [N, D_tech + D_bio], batch-normalised, technical first
HEAD_INPUT = "CONDITION_CODES__0"    # float32 [K, codec.width]
HEAD_OUTPUTS = ("W_TECH__0", "W_BIO__1", "BIAS__2")  # [K, D_tech], [K, D_bio], [K]


@dataclass
class Track:
    """One trained output track: an experiment identified by id, with its metadata values and its own bias.

    `bias` is the track's free bias (the reference's `bias[track]`): a request naming the track gets exactly it.
    """

    id: str
    metadata: dict[str, Any]
    bias: Optional[float] = None


# How a condition that is not a trained track gets its bias (MFD has a free bias per trained track only).
BIAS_RULE_DOCS = {
    "nearest_tracks_mean": "mean bias of the trained tracks that agree with the condition on the most categorical "
                           "metadata variables (an exact match gets that track's bias)",
}


@dataclass
class ModelCard:
    """`seq_len` is the request window in *bases* (`mfd_common.geometry.WINDOW_BASES`: 2177), not the reference's
    `seq_len` (2176 dinucleotide positions); the field keeps its name for the card format, `window_bases` reads it."""

    model_name: str
    seq_len: int
    onehot_order: int
    d_tech: int
    d_bio: int
    tracks: list[Track]
    codec: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    reverse_complement_average: bool = False
    bias_rule: str = "nearest_tracks_mean"
    format_version: int = CARD_FORMAT_VERSION

    @property
    def window_bases(self) -> int:
        """Bases in a request window (the trunk's TOKENS__0 width)."""
        return self.seq_len

    @property
    def d_features(self) -> int:
        return self.d_tech + self.d_bio

    def metadata_codec(self) -> MetadataCodec:
        return MetadataCodec.from_dict(self.codec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        write_atomically(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        data = dict(data)
        version = data.get("format_version", CARD_FORMAT_VERSION)
        if version != CARD_FORMAT_VERSION:
            raise ValueError(f"model card format {version} is not supported (expected {CARD_FORMAT_VERSION})")
        data["tracks"] = [Track(**t) for t in data["tracks"]]
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        return cls.from_dict(json.loads(Path(path).read_text()))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(card: ModelCard, root: str | Path, *, allow_missing: bool = False) -> None:
    """Raise if any file listed in the card's checksums differs, or is missing (paths relative to `root`).

    `allow_missing` serves consumers that hold only part of the files (the service on the Triton backend keeps
    the card while the weights live on the Triton host): files present are still checked, so a stale copy is caught.
    """
    for relpath, expected in card.checksums.items():
        path = Path(root) / relpath
        if not path.is_file():
            if allow_missing:
                continue
            raise FileNotFoundError(f"{path} listed in the model card is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{path}: sha256 {actual[:12]}… does not match the model card ({expected[:12]}…)")
