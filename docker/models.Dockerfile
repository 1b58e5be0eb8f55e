# Several models as one OCI image: each exported repository under /model/<name>/<version>/, plus busybox's sh and
# cp for the loader Job (k8s/model-loader), which publishes them as /models/by-name/<name>/<version>/ and, with
# MODEL_SET/MODELS, a model set (docs/multi-model.md). One model keeps docker/model.Dockerfile.
# The build context holds models/<name>/<version>/, each the output of `python -m training.export` (or
# `training.import_reference`):
#   python -m training.export build/grch38_ckpt --out ctx/models/grch38/1.2.0
#   python -m training.import_reference mm10.ckpt --mapping map.yaml --out ctx/models/mm10/0.3.0
#   docker build -f docker/models.Dockerfile -t registry.example.org/mfd/mfd-model:set-2026-12 ctx/
FROM busybox:1.36.1
COPY models/ /model/
USER 10001:10001
