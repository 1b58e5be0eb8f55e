"""Service layer (batch): batch scoring at scale over the service's own engine: VCF/BCF variant effects and bigWig
tracks.

`python -m service.batch --help`. Modules: `runtime` (engine and options), `shards` (work directory, resume,
atomic outputs), `variants` (VCF in and out), `tracks` (region tiling, bigWig). The effect arithmetic is
`service.core.effects`, shared with `/predict_variants`; nothing here imports `training`.
"""
