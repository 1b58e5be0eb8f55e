#!/usr/bin/env bash
# Build the service image with podman (no Docker engine, no registry) and test the running container:
# non-root user, read-only root filesystem as in k8s, the image's HEALTHCHECK passes, /livez /metadata /predict /metrics and the gRPC port answer,
# SIGTERM stops it promptly with exit status 0 (not a SIGKILL after the grace period).
#   scripts/image_test.sh            build + run checks      (the `image-test` make target)
#   MFD_IMAGE_SKIP_BUILD=1 ...       reuse the image already built
# Prints timings; exits non-zero on the first failed check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
# shellcheck source=podman_env.sh
. "$here/podman_env.sh"

image="${MFD_IMAGE:-localhost/mfd-serve:test}"
base="${MFD_BASE_IMAGE:-localhost/mfd-base:bookworm-py311}"
name="mfd-image-test-$$"
t0=$(date +%s)

step() { printf '\n== %s (+%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }
fail() { echo "FAIL: $*" >&2; podman logs "$name" 2>&1 | tail -40 >&2 || true; exit 1; }
cleanup() { podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "base image"
bash "$here/build_base_image.sh" "$base"

if [ -z "${MFD_IMAGE_SKIP_BUILD:-}" ]; then
  step "wheels"
  # The CPU torch wheel on this machine's disk goes into the build context; elsewhere pip takes it from the
  # PyTorch CPU index (TORCH_INDEX_URL default in the Dockerfile).
  torch_index=(--build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
  if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    cp -u /opt/wheels/torch-2.13.0+cpu-*.whl docker/wheels/
    torch_index=(--build-arg "TORCH_INDEX_URL=")
  fi
  secret=()
  ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
  [ -s "$ca" ] && secret=(--secret "id=pip_ca,src=$ca")
  step "podman build"
  tb=$(date +%s)
  podman build --format docker --network host \
    --build-arg "BASE_IMAGE=$base" "${torch_index[@]}" "${secret[@]}" \
    -t "$image" -f Dockerfile .
  echo "build took $(( $(date +%s) - tb ))s"
fi
podman image ls "$image"

step "static image checks"
user=$(podman image inspect "$image" --format '{{.Config.User}}')
[ "$user" = "10001:10001" ] || fail "image user is '$user', want 10001:10001"
podman run --rm --entrypoint python3 "$image" -c \
  "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda); sys.exit(torch.version.cuda is not None or not torch.__version__.startswith('2.13.0'))" \
  || fail "torch in the image is not 2.13.0 CPU"
uid=$(podman run --rm --entrypoint id "$image" -u)
[ "$uid" = "10001" ] || fail "container runs as uid $uid"

step "run"
# Its own network namespace (--network none): the container's loopback is private, so the default CMD (port 3000,
# gRPC 3001) and the image's own HEALTHCHECK run unchanged, whatever the host has on those ports.
# The same restrictions as the Kubernetes pod (k8s/base/deployment.yaml): read-only root filesystem with a
# writable /tmp (emptyDir), no capabilities, no privilege escalation.
podman run -d --name "$name" --network none \
  --read-only --tmpfs /tmp:rw,size=1g --cap-drop=ALL --security-opt no-new-privileges \
  "$image" >/dev/null
inside() { podman exec "$name" python3 -c "$1"; }
healthy=""
for _ in $(seq 1 180); do
  podman container exists "$name" && [ "$(podman inspect "$name" --format '{{.State.Running}}')" = "true" ] \
    || fail "container exited before it was healthy"
  # `podman healthcheck run` executes the image's HEALTHCHECK command (GET /readyz) inside the container.
  if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 1
done
[ -n "$healthy" ] || fail "HEALTHCHECK never passed"
echo "healthy after $(( $(date +%s) - t0 ))s since start of script"
podman inspect "$name" --format '{{.State.Health.Status}}' 2>/dev/null || true
hc=$(podman image inspect "$image" --format '{{json .Config.Healthcheck}}')
echo "image healthcheck: $hc"
echo "$hc" | grep -q readyz || fail "image has no HEALTHCHECK on /readyz"

step "endpoints inside the container"
inside "
import json, socket, urllib.request
base = 'http://127.0.0.1:3000'
assert urllib.request.urlopen(base + '/livez', timeout=5).status == 200
meta = json.load(urllib.request.urlopen(base + '/metadata', timeout=5))
print('model', meta['model'], 'backend', meta['backend'], 'seq_len', meta['seq_len'])
assert meta['backend'] == 'embedded'
body = json.dumps({'sequences': [('ACGT' * (meta['seq_len'] // 4 + 1))[:meta['seq_len']]], 'conditions': [{}]}).encode()
req = urllib.request.Request(base + '/predict', data=body, headers={'content-type': 'application/json'})
out = json.load(urllib.request.urlopen(req, timeout=60))
p = out['results'][0]['scores'][0]['probability']
print('predict probability', p)
assert 0.0 < p < 1.0
metrics = urllib.request.urlopen(base + '/metrics', timeout=5).read().decode()
for name in ('bentoml_service_request_duration_seconds', 'mfd_request_latency_seconds', 'mfd_windows_scored_total'):
    assert name in metrics, name
socket.create_connection(('127.0.0.1', 3001), timeout=5).close()   # KServe-v2 gRPC port
print('endpoints ok')
" || fail "endpoint checks inside the container"
procs=$(podman top "$name" user pid args)
echo "$procs"
if echo "$procs" | awk 'NR>1 {print $1}' | grep -qx root; then fail "a process in the container runs as root"; fi

step "SIGTERM"
ts=$(date +%s.%N)
podman stop -t 30 "$name" >/dev/null
te=$(date +%s.%N)
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
took=$(python3 -c "print(round($te - $ts, 2))")
echo "stopped in ${took}s, exit code $code"
python3 -c "import sys; sys.exit(not ($took < 25))" || fail "SIGTERM did not stop the service (took ${took}s)"
# 0: BentoML handled SIGTERM and shut down cleanly (143 would mean it died of the signal unhandled).
[ "$code" = "0" ] || fail "exit code after SIGTERM: $code"

step "image size"
podman image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB\n", $1/1e6}'
echo "IMAGE TEST PASSED in $(( $(date +%s) - t0 ))s"
