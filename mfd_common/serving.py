"""Contract (mfd_common): the model repository's layout and what a Triton server must report for a card's models.

Written by `training.export` into each config.pbtxt (`parameters`) and read back by the service at start-up
(`service.backends.triton`), so that a service never scores with a card that is not the one the loaded models were
exported with: the model name and the sha256 of each model file (the card's `checksums`) travel as string
parameters, and the served tensors (names, Triton dtypes, dims without the batch dimension) follow from the card.
"""
from __future__ import annotations

from pathlib import Path

from .card import HEAD_INPUT, HEAD_MODEL, HEAD_OUTPUTS, TRUNK_INPUT, TRUNK_MODEL, TRUNK_OUTPUT, ModelCard

#: config.pbtxt parameters carrying the card's identity.
PARAM_MODEL_NAME = "MFD_MODEL_NAME"
PARAM_MODEL_SHA256 = "MFD_MODEL_SHA256"
#: The model version directory the exporter writes (`<model>/1/model.pt`) and Triton serves.
MODEL_VERSION_DIR = "1"
#: The TorchScript file of each served model (Triton's libtorch backend loads `<model>/<version>/model.pt`).
MODEL_FILENAME = "model.pt"
#: The Triton model configuration beside each model's version directories.
CONFIG_FILENAME = "config.pbtxt"

Tensor = tuple[str, str, tuple[int, ...]]  # (name, Triton dtype without TYPE_, dims without the batch dimension)


def served_tensors(card: ModelCard) -> dict[str, dict[str, list[Tensor]]]:
    """Per model: the inputs and outputs Triton must serve for `card` (names in order, dtypes, dims)."""
    w_tech, w_bio, bias = HEAD_OUTPUTS
    return {
        TRUNK_MODEL: {"inputs": [(TRUNK_INPUT, "UINT8", (card.window_bases,))],
                      "outputs": [(TRUNK_OUTPUT, "FP32", (card.d_features,))]},
        HEAD_MODEL: {"inputs": [(HEAD_INPUT, "FP32", (card.metadata_codec().width,))],
                     "outputs": [(w_tech, "FP32", (card.d_tech,)), (w_bio, "FP32", (card.d_bio,)),
                                 (bias, "FP32", (1,))]},
    }


def model_file_key(model: str) -> str:
    """The card's checksum key of a served model file: its path relative to the repository root."""
    return f"{model}/{MODEL_VERSION_DIR}/{MODEL_FILENAME}"


def model_file(repository: str | Path, model: str) -> Path:
    """The served model file of `model` in the repository at `repository`."""
    return Path(repository) / model / MODEL_VERSION_DIR / MODEL_FILENAME


def identity_parameters(card_name: str, sha256: str) -> dict[str, str]:
    """The config.pbtxt string parameters naming the card and the model file's sha256."""
    return {PARAM_MODEL_NAME: card_name, PARAM_MODEL_SHA256: sha256}
