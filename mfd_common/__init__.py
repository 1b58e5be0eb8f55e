"""Contract (mfd_common): what training writes and serving reads, each fact in one place (docs/contract.md).

- `tokens`: DNA ↔ uint8 tokens (the trunk's input codes).
- `geometry`: the window in bases vs dinucleotide positions, the bin size.
- `codec`: metadata → condition codes (the head's input).
- `card`: the model card (`model_card.json`), tensor and model names.
- `serving`: the model repository layout (model file names) and what Triton must report.
- `numeric`: the sigmoid and the numeric metadata range rule.
- `publish`: atomic publication of files and folders (stage beside, then rename).
- `triton_compat`: which exporting torch a Triton release can load.

Training writes artifacts in this format and the service reads them; neither imports the other.
This package depends on numpy (and yaml/packaging for `triton_compat`) only, so the service never pulls training
code in at run time.
"""
