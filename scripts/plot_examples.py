"""Scripts (docs pictures): docs/img/*.png from the bundled demo model, served for real and called through mfd.Client.

    python scripts/plot_examples.py --data DEMO_DATA_DIR --out docs/img

Starts `python -m service` on a free loopback port (model_repository/, the demo genome as MFD_FASTA), then:
1. scans chr1 in 128-bp steps and takes the window with the highest biological logit for DEMO002 (K562 CTCF)
   and the one with the highest technical logit for DEMO001 (K562 CTCF from lab-A, whose peaks are GC-biased);
2. in-silico mutagenesis of that window through /predict (every base changed to each other base: 3 L windows),
   map[p][b] = score(base b at p) − score(window), for DEMO001 (K562 CTCF, lab-A: a GC-biased lab) — the
   independent ISM that /attribute's will be checked against once it exists;
3. draws the 48 bases with the largest biological (technical) effect as stacked logos (full / biological /
   technical): attribution_logos.png (attribution_logos_gc.png);
4. the strongest single-base change there as a variant, scored by /predict_variants under all 14 tracks.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mfd  # noqa: E402
from mfd import plots  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(client: mfd.Client, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        try:
            client.metadata(refresh=True)
            return
        except Exception:  # not up yet
            time.sleep(0.5)
    raise RuntimeError("the service did not start")


def read_chrom(fasta: Path, name: str) -> str:
    from pyfaidx import Fasta

    with Fasta(str(fasta)) as genome:
        return str(genome[name][:]).upper()


def ism(client: mfd.Client, window: str, condition: str) -> dict[str, np.ndarray]:
    mutants, where = [window], []
    for p, own in enumerate(window):
        for b, base in enumerate("ACGT"):
            if base != own:
                mutants.append(window[:p] + base + window[p + 1:])
                where.append((p, b))
    df = client.predict(mutants, conditions=[condition])
    maps = {}
    for part in ("logit", "logit_bio", "logit_tech"):
        values = df[part].to_numpy()
        m = np.zeros((len(window), 4))
        p, b = np.array(where).T
        m[p, b] = values[1:] - values[0]
        maps[part] = m
    return maps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="python -m training.demo_data output (genome.fa)")
    parser.add_argument("--out", default=ROOT / "docs" / "img", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MFD_MODEL_REPOSITORY": str(ROOT / "model_repository"),
           "MFD_FASTA": str(args.data / "genome.fa"), "MFD_GRPC_PORT": "0",
           "MFD_MAX_SEQUENCES": "256", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        with mfd.Client(f"http://127.0.0.1:{port}", progress=True, timeout=600) as client:
            wait_ready(client, server)
            seq_len = client.metadata()["seq_len"]
            chrom = read_chrom(args.data / "genome.fa", "chr1")
            starts = list(range(0, len(chrom) - seq_len, 128))
            scan = client.predict(intervals=[("chr1", s, s + seq_len) for s in starts],
                                  conditions=["DEMO002", "DEMO001"])
            best = int(scan[scan.condition == 0].sort_values("logit_bio").iloc[-1]["start"])
            gc = int(scan[scan.condition == 1].sort_values("logit_tech").iloc[-1]["start"])
            picks = {}
            for name, start, part_key, what in [("attribution_logos", best, "logit_bio", "biology: a motif"),
                                                ("attribution_logos_gc", gc, "logit_tech", "technique: GC")]:
                window = chrom[start:start + seq_len]
                maps = ism(client, window, "DEMO001")
                strength = np.convolve(np.abs(maps[part_key]).sum(1), np.ones(48), mode="valid")
                lo = int(strength.argmax())
                part = {k: v[lo:lo + 48] for k, v in maps.items()}
                fig = plots.attribution_logos(part["logit"], part["logit_bio"], part["logit_tech"], center=True,
                                              start=start + lo, title=f"chr1:{start + lo}-{start + lo + 48}, DEMO001 "
                                              f"(K562 CTCF, lab-A), ISM through /predict, centred; strongest {what}")
                (args.out / f"{name}.png").write_bytes(plots.to_png(fig, dpi=110))
                picks[name] = (start, lo, part)
            start, lo, part = picks["attribution_logos"]
            best = start
            p, b = np.unravel_index(np.abs(part["logit_bio"]).argmax(), part["logit_bio"].shape)
            pos = best + lo + int(p) + 1  # 1-based
            variant = {"chrom": "chr1", "pos": pos, "ref": chrom[pos - 1], "alt": "ACGT"[b], "id": "example"}
            tracks = [t["id"] for t in client.metadata()["tracks"]]
            effects = client.predict_variants([variant], conditions=tracks)
            fig = plots.variant_effects(effects, "example")
            (args.out / "variant_effects.png").write_bytes(plots.to_png(fig, dpi=110))
            print(f"window chr1:{best}-{best + seq_len}, logos at {best + lo}, variant {variant}")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
