"""Training layer (reference): import a checkpoint trained with the authors' code into a model repository the service
serves unchanged.

    python -m training.import_reference CHECKPOINT.ckpt --mapping MAPPING.yaml --out DIR [--name NAME]

    CHECKPOINT.ckpt ──safe read──► state_dict, hparams, df_raw (track ids = its index, raw metadata)
    MAPPING.yaml ──► variables + groups ──fit on df_raw──► MetadataCodec ──verified against the state dict's
                                                                           per-column `var_vals` buffers
    state_dict − aliases (model.*), unused heads (head.*, predictor_*, discriminator.*), var_vals + track_codes
        ──► MFDModel.load_state_dict(strict=True) ──► checkpoint (temp) ──► training.export ──► DIR

The mapping YAML is not inside their checkpoint (only its path), so it is given here; the codec refitted from it
must reproduce the encoded training values the checkpoint stores, otherwise the weights would be read against the
wrong vocabulary and the import stops. Trained track ids are the checkpoint's accessions, in its output order,
each with its own free bias. DIR must not exist or be empty; it appears complete (renamed from a staging folder
beside it) or not at all.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mfd_common.card import ModelCard, Track, sha256_file
from mfd_common.codec import GROUPS, MetadataCodec, MetadataError
from mfd_common.publish import publish

from ..data.mapping import MappingError, load_mapping, parse_mapping
from ..model.checkpoint import save_checkpoint
from ..model.network import MFDModel, ModelConfig
from ..repository.export import ExportError, export_repository
from .checkpoint import (ReferenceCheckpoint, ReferenceImportError, json_safe, model_config, n_classes,
                         read_reference_checkpoint)

# State-dict keys of theirs that our model does not hold: `model.<i>.*` aliases of stem/tower/dilated/pointwise,
# the baseline `head` their mixin leaves unused, the penalty networks, and the encoded training values.
DROPPED_PREFIXES = ("model.", "head.", "predictor_bio.", "predictor_tech.", "discriminator.")
VAR_VALS_SUFFIX = ".var_vals"
VAR_VALS_ATOL = 1e-5


def var_vals_key(group: str, variable: str) -> str:
    return f"metadata_embedding.embedding_{group}.column_embeddings.{variable}{VAR_VALS_SUFFIX}"


def track_rows(checkpoint: ReferenceCheckpoint, names: Sequence[str], mapping: Path) -> tuple[list[str], list[dict]]:
    """Track ids (df_raw's index, in output order) and, per track, the raw values of the mapped variables."""
    frame = checkpoint.df_raw
    for name in names:
        if name not in frame.columns:
            raise ReferenceImportError(f"{mapping}: variable {name!r} is not a column of the checkpoint's "
                                       f"metadata (df_raw has: {', '.join(map(str, frame.columns))})")
    ids = [str(i) for i in frame.index]
    if len(set(ids)) != len(ids):
        raise ReferenceImportError(f"{checkpoint.path}: metadata_loader.df_raw has duplicate track ids")
    rows = [{name: frame.columns[name][i] for name in names} for i in range(len(ids))]
    return ids, rows


def fit_codec(checkpoint: ReferenceCheckpoint, mapping: Path) -> tuple[MetadataCodec, list[str], list[dict]]:
    try:
        variables, groups = parse_mapping(load_mapping(mapping), source=str(mapping))
    except MappingError as err:
        raise ReferenceImportError(str(err)) from None
    ids, rows = track_rows(checkpoint, [v.name for v in variables], mapping)
    try:
        codec = MetadataCodec.fit(variables, groups, rows, unspecified="mean")
    except MetadataError as err:
        raise ReferenceImportError(f"{mapping}: {err.field}: cannot encode the checkpoint's tracks: "
                                   f"{err.reason}") from None
    return codec, ids, rows


def verify_var_vals(codec: MetadataCodec, codes: np.ndarray, state_dict: dict[str, torch.Tensor],
                    mapping: Path) -> None:
    """Our encoding of every track must equal the reference's stored `var_vals`, column by column."""
    expected_keys = set()
    for group in GROUPS:
        for name in codec.groups[group].variables:
            key = var_vals_key(group, name)
            expected_keys.add(key)
            if key not in state_dict:
                raise ReferenceImportError(f"{mapping}: mapping YAML does not match the checkpoint: {group} "
                                           f"variable {name!r} has no column embedding ({key} is missing)")
            start, end = codec.offsets[name]
            ours, theirs = codes[:, start:end], state_dict[key].double().numpy()
            if ours.shape != theirs.shape:
                raise ReferenceImportError(
                    f"{mapping}: mapping YAML does not match the checkpoint: variable {name!r} encodes to "
                    f"{ours.shape[1]} columns ({codec.by_name[name].vocabulary or 'numeric'}) but {key} has "
                    f"shape {list(theirs.shape)}")
            if not np.allclose(ours, theirs, atol=VAR_VALS_ATOL, rtol=VAR_VALS_ATOL):
                row = int(np.argmax(np.abs(ours - theirs).max(axis=1)))
                raise ReferenceImportError(
                    f"{mapping}: mapping YAML does not match the checkpoint: variable {name!r} encodes track "
                    f"{row} as {ours[row].round(4).tolist()}, the checkpoint's {key} has "
                    f"{theirs[row].round(4).tolist()} (labels, order, mean/std or type differ)")
    extra = sorted(k for k in state_dict if k.endswith(VAR_VALS_SUFFIX) and k not in expected_keys)
    if extra:
        raise ReferenceImportError(f"{mapping}: mapping YAML does not match the checkpoint: the checkpoint has "
                                   f"a column embedding the mapping does not name ({extra[0]})")


def model_weights(state_dict: dict[str, torch.Tensor], track_codes: np.ndarray) -> dict[str, torch.Tensor]:
    weights = {k: v for k, v in state_dict.items()
               if not k.startswith(DROPPED_PREFIXES) and not k.endswith(VAR_VALS_SUFFIX)}
    weights["track_codes"] = torch.from_numpy(np.asarray(track_codes, dtype=np.float32))
    return weights


def build_model(cfg: ModelConfig, codec: MetadataCodec, n_tracks: int, weights: dict[str, torch.Tensor],
                where: str) -> MFDModel:
    """Our model with their weights; every key must be present, known and of the right shape."""
    try:
        model = MFDModel(cfg, codec, n_tracks)
    except ValueError as err:
        raise ReferenceImportError(f"{where}: the mapping does not fit the model: {err}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        raise ReferenceImportError(f"{where}: state_dict key {missing[0]!r} is missing "
                                   f"({len(missing)} missing; does the mapping YAML match the checkpoint?)")
    if unexpected:
        raise ReferenceImportError(f"{where}: unexpected state_dict key {unexpected[0]!r} "
                                   f"({len(unexpected)} unexpected; does the mapping YAML match the checkpoint?)")
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise ReferenceImportError(f"{where}: state_dict key {key!r} has shape {list(weights[key].shape)}, the "
                                       f"model built from the hparams and mapping YAML expects {list(tensor.shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()}, strict=True)
    return model.eval()


def build_card(name: str, model: MFDModel, codec: MetadataCodec, ids: list[str], rows: list[dict],
               checkpoint: ReferenceCheckpoint, mapping: Path) -> ModelCard:
    bias = model.bias.detach().double().tolist()
    return ModelCard(
        model_name=name, seq_len=model.cfg.window_bases, onehot_order=model.cfg.seq_order,
        d_tech=model.d_tech, d_bio=model.d_bio,
        tracks=[Track(id=i, metadata={k: json_safe(v) for k, v in row.items()}, bias=b)
                for i, row, b in zip(ids, rows, bias)],
        codec=codec.to_dict(), bias_rule=model.cfg.bias_rule,
        config={"source": checkpoint.source,
                "mapping": {"file": mapping.name, "sha256": sha256_file(mapping),
                            "content": json_safe(load_mapping(mapping))}},
        versions={"torch": torch.__version__.split("+")[0],
                  "lightning (source)": str(checkpoint.source.get("lightning_version"))},
    )


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReferenceImportError(f"{out_dir}: output directory exists and is not empty (give a new one)")


def import_reference(checkpoint_path: str | Path, mapping_path: str | Path, out_dir: str | Path, *,
                     name: str | None = None) -> Path:
    """Checkpoint + mapping → model repository at `out_dir`; raises ReferenceImportError naming file and key."""
    checkpoint_path, mapping, out_dir = Path(checkpoint_path), Path(mapping_path), Path(out_dir)
    _check_out_dir(out_dir)
    checkpoint = read_reference_checkpoint(checkpoint_path)
    cfg = model_config(checkpoint.hparams, source=str(checkpoint_path))
    n_tracks = n_classes(checkpoint)
    codec, ids, rows = fit_codec(checkpoint, mapping)
    codes = codec.encode_many(rows, strict=False)
    verify_var_vals(codec, codes, checkpoint.state_dict, mapping)
    model = build_model(cfg, codec, n_tracks, model_weights(checkpoint.state_dict, codes), str(checkpoint_path))
    card = build_card(name or checkpoint_path.stem, model, codec, ids, rows, checkpoint, mapping)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.import-", dir=out_dir.parent) as scratch:
        staging = Path(scratch)
        save_checkpoint(model, card, staging / "checkpoint")
        try:
            export_repository(staging / "checkpoint", staging / "repository")
        except (ExportError, ValueError, FileNotFoundError) as err:
            raise ReferenceImportError(f"{checkpoint_path}: export failed: {err}") from None
        _check_out_dir(out_dir)
        publish(staging / "repository", out_dir)
    return out_dir
