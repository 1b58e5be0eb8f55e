#!/usr/bin/env bash
# GPU gate: run on a machine with an NVIDIA GPU (and a CUDA build of torch) before claiming GPU figures.
#
#   scripts/gpu_check.sh [--out build/gpu_check.md] [--quick]
#
# 1. the bundled model_repository in the embedded backend on CUDA in fp32/fp16/bf16, parity against CPU fp32
#    (scripts/gpu_check.py);
# 2. bench.bench_trunk on CUDA (eager / TorchScript / reduced precision, windows/s);
# 3. bench.bench_service on CUDA (MFD_DEVICE=cuda) for a C=30 and a C=768 model: service vs raw trunk, JSON and
#    binary gRPC;
# all in one markdown report. Without a GPU the CUDA parts are SKIPPED with the reason and the CPU-only part
# (step 1's CPU rows) still runs: tests/test_gpu_check.py runs exactly that in CI. Exit status: 0 ok or skipped,
# 1 parity or bench failure. --quick shortens the benches (a smoke run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build/gpu_check.md"
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "usage: $0 [--out REPORT.md] [--quick]" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
mkdir -p "$(dirname "$OUT")"
cd "$ROOT"

{
  echo "# mfd-serve GPU gate — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "host $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    echo '```'
  else
    echo "nvidia-smi: not found"
  fi
  echo
} > "$OUT"

status=0
"$PYTHON" scripts/gpu_check.py --report "$OUT" || status=1

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  msg="SKIPPED bench_trunk and bench_service on CUDA: no NVIDIA GPU visible to torch"
  printf '## CUDA benchmarks\n\n**%s.** GPU figures are pending (bench/README.md).\n' "$msg" >> "$OUT"
  echo "$msg"
  echo "report: $OUT"
  exit "$status"
fi

if [ "$QUICK" = 1 ]; then SECONDS_ARG=(--seconds 1 --min-reps 2); ROUNDS=(--rounds 1); else SECONDS_ARG=(); ROUNDS=(); fi
section() { printf '\n## %s\n\n```\n' "$1" >> "$OUT"; }
endsection() { printf '```\n' >> "$OUT"; }

section "bench.bench_trunk --device cuda (demo model and default size C=768)"
"$PYTHON" -m bench.bench_trunk --device cuda --batch-size 64 "${SECONDS_ARG[@]}" \
  --json "${OUT%.md}.bench_trunk.json" >> "$OUT" 2>&1 || status=1
endsection

for channels in 30 768; do
  section "MFD_DEVICE=cuda bench.bench_service --channels $channels (service/raw ratio)"
  MFD_DEVICE=cuda "$PYTHON" -m bench.bench_service --channels "$channels" --windows-per-request 64 \
    "${ROUNDS[@]}" >> "$OUT" 2>&1 || status=1
  endsection
done

echo "report: $OUT"
exit "$status"
