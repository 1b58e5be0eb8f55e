"""Service layer (core): the scoring engine and its domain, independent of any wire format.

`engine` (one Engine per model: backend, micro-batcher, condition cache, genome), `domain` (typed inputs and
results), `scoring` (`Scores`, the one result type), `conditions` (the one condition parser and the weight cache),
`effects` (shift × strand ensembling, variant effects), `variants` (variant windows), `genome` (FASTA access),
`batcher` (micro-batching). Attribution (issue 21) belongs here too, on top of `Engine.features` and `scoring`.
Nothing here imports service.api, pydantic request models or protobuf (docs/architecture.md).
"""
