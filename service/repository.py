"""Service layer (shared): open an exported model repository: the model card plus (for the embedded backend) the
TorchScript files.

The card is the service's only source of truth about the model (vocabularies, tracks, seq_len, latent split),
and its checksums bind it to the weights it was exported with, so a half-copied or mismatched repository is
refused at start-up instead of serving wrong numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mfd_common.card import CARD_FILENAME, HEAD_MODEL, TRUNK_MODEL, ModelCard, verify_checksums
from mfd_common.codec import MetadataCodec
from mfd_common.serving import MODEL_FILENAME


class RepositoryError(RuntimeError):
    """The model repository is missing, incomplete or does not match its card."""


@dataclass(frozen=True)
class ModelRepository:
    root: Path
    card: ModelCard
    codec: MetadataCodec

    @property
    def trunk_path(self) -> Path:
        return self.model_file(TRUNK_MODEL)

    @property
    def head_path(self) -> Path:
        return self.model_file(HEAD_MODEL)

    def model_file(self, model: str, version: int | None = None) -> Path:
        """`<root>/<model>/<version>/model.pt`, the highest numeric version when none is given."""
        base = self.root / model
        if version is None:
            versions = sorted((int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()),
                              reverse=True) if base.is_dir() else []
            if not versions:
                raise RepositoryError(f"{base} has no numeric version folder with a {MODEL_FILENAME}")
            version = versions[0]
        return base / str(version) / MODEL_FILENAME


def load_repository(root: str | Path, *, require_models: bool = True) -> ModelRepository:
    """Load and verify a repository.

    With `require_models` (embedded backend) every file listed in the card's checksums must exist and match.
    Without it (Triton backend: the weights live on the Triton host) files that are present are still checked,
    so a stale local copy is caught, but absent ones are allowed.
    """
    root = Path(root)
    card_path = root / CARD_FILENAME
    if not card_path.is_file():
        raise RepositoryError(f"{root} is not an MFD model repository: {CARD_FILENAME} is missing "
                              f"(set MFD_MODEL_REPOSITORY or export a model with training.export)")
    try:
        card = ModelCard.load(card_path)
        codec = card.metadata_codec()
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(f"{card_path}: {exc}") from exc
    try:
        verify_checksums(card, root, allow_missing=not require_models)
    except (FileNotFoundError, ValueError) as exc:
        raise RepositoryError(str(exc)) from exc
    repo = ModelRepository(root=root, card=card, codec=codec)
    if require_models:
        for path in (repo.trunk_path, repo.head_path):
            if not path.is_file():
                raise RepositoryError(f"{path} is missing")
    return repo
