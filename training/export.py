"""Training layer (commands): export a checkpoint to a Triton model repository (`training.repository.export`).

    python -m training.export CKPT --out model_repository/ [--reverse-complement-average] [--max-batch-size 256]
    python -m training.export CKPT --out models/ --name grch38     # into a folder of models: models/grch38/

With `--name NAME` the repository is written to `<out>/<NAME>/`, one model of a multi-model repository
(mfd_common.model_store: NAME must obey its name rule; `--out` must not itself be a single-model repository);
the card keeps the checkpoint's `model_name`, the folder name is the name the service routes by.

A failure exits with status 1 and one line; nothing half-written is left in the output directory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from mfd_common.card import CARD_FILENAME, ModelCard

from .repository import triton_config
from .repository.export import ExportError, export_repository, output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description="Checkpoint → Triton model "
                                     "repository (TorchScript, parity-checked against eager).")
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder (model.safetensors + model_card.json)")
    parser.add_argument("--out", type=Path, required=True, help="model repository to write (e.g. model_repository/)")
    parser.add_argument("--reverse-complement-average", "--rc-average", action="store_true",
                        help="export a trunk that averages features over both strands")
    parser.add_argument("--max-batch-size", type=int, default=triton_config.DEFAULT_TRUNK_MAX_BATCH)
    parser.add_argument("--head-max-batch-size", type=int, default=triton_config.DEFAULT_HEAD_MAX_BATCH)
    parser.add_argument("--preferred-batch-sizes", type=int, nargs="*", default=None)
    parser.add_argument("--max-queue-delay-us", type=int, default=triton_config.DEFAULT_QUEUE_DELAY_US)
    parser.add_argument("--trunk-instance-kind", choices=["KIND_GPU", "KIND_CPU"], default="KIND_GPU")
    parser.add_argument("--triton-tag", default=None,
                        help="NGC tritonserver release to check the exporting torch against (default: the tag in "
                             "k8s/components/triton/kustomization.yaml)")
    parser.add_argument("--name", default=None,
                        help="write into the multi-model repository --out as model NAME (<out>/<NAME>/)")
    args = parser.parse_args(argv)
    out_dir = output_dir(args.out, args.name, "export")
    if out_dir is None:
        return 2
    try:
        out = export_repository(args.checkpoint, out_dir, reverse_complement_average=args.reverse_complement_average,
                                max_batch_size=args.max_batch_size, head_max_batch_size=args.head_max_batch_size,
                                preferred_batch_sizes=args.preferred_batch_sizes,
                                max_queue_delay_us=args.max_queue_delay_us,
                                trunk_instance_kind=args.trunk_instance_kind, triton_tag=args.triton_tag)
    except (ExportError, FileNotFoundError, ValueError) as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    card = ModelCard.load(out / CARD_FILENAME)
    parity = card.config["export"]["parity"]
    print(f"exported {card.model_name!r} to {out} (features max |Δ| vs eager = {parity['features_max_abs_diff']:.2e}, "
          f"reverse_complement_average={card.reverse_complement_average})")
    for relpath, digest in card.checksums.items():
        size = (out / relpath).stat().st_size
        print(f"  {relpath}  {size / 1e6:.2f} MB  sha256 {digest[:16]}…")
    return 0


if __name__ == "__main__":
    sys.exit(main())
