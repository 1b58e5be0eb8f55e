# shellcheck shell=bash
# Sourced by the image scripts: a self-contained podman setup for machines without a Docker engine or a
# container registry. Root podman, runc with cgroupfs, no registry look-ups, storage under build/podman.
# Nothing here edits /etc/containers.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_conf="$_root/build/podman"
mkdir -p "$_conf/storage" "$_conf/run"

# Sandboxes may forbid setting rlimits as high as podman's defaults (nofile 1048576, nproc 4194304), or even as
# high as our own: ask for less than what this shell has.
_min() { if [ "$1" = unlimited ] || [ "$1" -gt "$2" ]; then echo "$2"; else echo $(( $1 / 2 )); fi; }
_nofile="$(_min "$(ulimit -Hn)" 16384)"
_nproc="$(_min "$(ulimit -Hu)" 8192)"
cat >"$_conf/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[containers]
netns = "host"
default_ulimits = ["nofile=${_nofile}:${_nofile}", "nproc=${_nproc}:${_nproc}"]
EOF
cat >"$_conf/storage.conf" <<EOF
[storage]
driver = "${MFD_PODMAN_STORAGE_DRIVER:-overlay}"
graphroot = "$_conf/storage"
runroot = "$_conf/run"
EOF
# Short names resolve to nothing: an image that is not already local is an error, never a pull.
cat >"$_conf/registries.conf" <<'EOF'
unqualified-search-registries = []
short-name-mode = "enforcing"
EOF
export CONTAINERS_CONF="$_conf/containers.conf"
export CONTAINERS_STORAGE_CONF="$_conf/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$_conf/registries.conf"
export BUILDAH_ISOLATION=chroot
unset _root _conf _nofile _nproc
unset -f _min
