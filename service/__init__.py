"""Service layer (entry): mfd-serve's online service: BentoML HTTP API, KServe v2 gRPC, embedded TorchScript or Triton
backends.

Nothing here imports `training`: the service works from an exported model repository and `mfd_common` only,
so a serving image needs neither the training code nor its dependencies.
"""
