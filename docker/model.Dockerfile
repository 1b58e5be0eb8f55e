# A model version as an OCI image: the exported Triton repository under /model/<version>/, plus busybox's sh and
# cp for the loader Job (k8s/model-loader). Registries already store, sign and replicate images; a model travels
# the same way as the code, with no bucket credentials in the cluster.
# The build context is any directory holding the exported `model_repository/` (the repository root ships the
# bundled demo model there):
#   python -m training.export <checkpoint> out/model_repository
#   docker build -f docker/model.Dockerfile --build-arg MODEL_VERSION=0.2.0 \
#       -t registry.example.org/mfd/mfd-model:0.2.0 out/
FROM busybox:1.36.1
ARG MODEL_VERSION
RUN test -n "${MODEL_VERSION}" || (echo "--build-arg MODEL_VERSION=<version> is required" >&2; exit 1)
COPY model_repository/ /model/${MODEL_VERSION}/
USER 10001:10001
