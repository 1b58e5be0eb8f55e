"""Shared contract (serving): what a Triton server must report for the models a model card describes.

Written by `training.export` into each config.pbtxt (`parameters`) and read back by the service at start-up
(`service.backends.triton`), so that a service never scores with a card that is not the one the loaded models were
exported with: the model name and the sha256 of each model file (the card's `checksums`) travel as string
parameters, and the served tensors (names, Triton dtypes, dims without the batch dimension) follow from the card.
"""
from __future__ import annotations

from .card import HEAD_INPUT, HEAD_MODEL, HEAD_OUTPUTS, TRUNK_INPUT, TRUNK_MODEL, TRUNK_OUTPUT, ModelCard

#: config.pbtxt parameters carrying the card's identity.
PARAM_MODEL_NAME = "MFD_MODEL_NAME"
PARAM_MODEL_SHA256 = "MFD_MODEL_SHA256"
#: The model version directory the exporter writes (`<model>/1/model.pt`) and Triton serves.
MODEL_VERSION_DIR = "1"

Tensor = tuple[str, str, tuple[int, ...]]  # (name, Triton dtype without TYPE_, dims without the batch dimension)


def served_tensors(card: ModelCard) -> dict[str, dict[str, list[Tensor]]]:
    """Per model: the inputs and outputs Triton must serve for `card` (names in order, dtypes, dims)."""
    w_tech, w_bio, bias = HEAD_OUTPUTS
    return {
        TRUNK_MODEL: {"inputs": [(TRUNK_INPUT, "UINT8", (card.seq_len,))],
                      "outputs": [(TRUNK_OUTPUT, "FP32", (card.d_features,))]},
        HEAD_MODEL: {"inputs": [(HEAD_INPUT, "FP32", (card.metadata_codec().width,))],
                     "outputs": [(w_tech, "FP32", (card.d_tech,)), (w_bio, "FP32", (card.d_bio,)),
                                 (bias, "FP32", (1,))]},
    }


def model_file_key(model: str, filename: str = "model.pt") -> str:
    """The card's checksum key of a served model file."""
    return f"{model}/{MODEL_VERSION_DIR}/{filename}"


def identity_parameters(card_name: str, sha256: str) -> dict[str, str]:
    return {PARAM_MODEL_NAME: card_name, PARAM_MODEL_SHA256: sha256}
