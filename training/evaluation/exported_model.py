"""Training layer (analysis): an exported model repository read back for the downstream analyses.

Why here and not through the service: the analyses (`training.evaluation.enhancer_prediction`,
`training.evaluation.rare_variant_enrichment`) need features and per-part logits for thousands of windows in one
process, and the data flow runs training → model_repository → service, so training may read the repository's files
but never import the service (which is also being reshaped). What is read is the contract itself: `model_card.json`
(tracks, codec, window length), the TorchScript trunk (uint8 tokens [N, window bases] → features [N, d_tech +
d_bio], technical first) and head (condition codes [K, width] → w_tech [K, d_tech], w_bio [K, d_bio], bias [K, 1]),
with the card's checksums verified as the service verifies them.

Windows come from the reference FASTA through pyfaidx (plain, or BGZF with .fai/.gzi), upper-cased, IUPAC codes
as N, padded with N past a chromosome's ends; a window centred on a position puts it at index length // 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mfd_common.card import CARD_FILENAME, HEAD_MODEL, TRUNK_MODEL, ModelCard, verify_checksums
from mfd_common.codec import MetadataError
from mfd_common.serving import model_file
from mfd_common.tokens import N_CODE, encode, reverse_complement


class AnalysisInputError(ValueError):
    """A user's input the analysis cannot use; the message names the file or option and the reason."""


def run_analysis(analysis: Callable[[], tuple[list[dict], dict]],
                 write_table: Callable[[list[dict], Path | None, dict], None], out: Path | None) -> int:
    """The exit status of an analysis command: 2 with one line (`error: …`) on bad input; else 0 with the run's
    summary (JSON) on stderr and its table on stdout and in `out`. One place for both repository analyses."""
    try:
        rows, summary = analysis()
    except AnalysisInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary), file=sys.stderr)
    write_table(rows, out, summary)
    return 0


class ExportedModel:
    """The trunk and head of an exported model repository (`python -m training.export` writes one)."""

    def __init__(self, directory: str | Path, *, threads: int | None = None, device: str = "cpu"):
        import torch

        self.directory = Path(directory)
        card_path = self.directory / CARD_FILENAME
        if not card_path.is_file():
            raise AnalysisInputError(f"--model: {self.directory} is not a model repository ({CARD_FILENAME} missing)")
        try:
            self.card = ModelCard.load(card_path)
            verify_checksums(self.card, self.directory)
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise AnalysisInputError(f"--model: {card_path}: {err}") from None
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.codec = self.card.metadata_codec()
        self._trunk = torch.jit.load(str(model_file(self.directory, TRUNK_MODEL)), map_location=device).eval()
        self._head = torch.jit.load(str(model_file(self.directory, HEAD_MODEL)), map_location=device).eval()

    @property
    def window(self) -> int:
        """Bases per trunk input (the card's window, `mfd_common.geometry.WINDOW_BASES` for the reference)."""
        return self.card.window_bases

    @property
    def d_tech(self) -> int:
        return self.card.d_tech

    def features(self, tokens: np.ndarray, *, strands: int = 2, batch_size: int = 256) -> np.ndarray:
        """float32 [N, d_tech + d_bio] for uint8 tokens [N, window]; strands=2 averages the features with the
        reverse complement's (as the authors' enhancer script averages both strands' embeddings)."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(tokens), batch_size):
                block = np.ascontiguousarray(tokens[start:start + batch_size])
                f = self._trunk(torch.from_numpy(block).to(self.device)).float()
                if strands == 2:
                    rc = np.ascontiguousarray(reverse_complement(block))
                    f = (f + self._trunk(torch.from_numpy(rc).to(self.device)).float()) / 2
                out.append(f.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.card.d_features), np.float32)

    def condition_weights(self, conditions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(w_tech [K, d_tech], w_bio [K, d_bio]) for trained track ids or `key=value;key=value` metadata."""
        import torch

        rows = [self.condition_metadata(c) for c in conditions]
        try:
            codes = self.codec.encode_many(rows)
        except MetadataError as err:
            raise AnalysisInputError(f"--conditions: {err}") from None
        with torch.inference_mode():
            w_tech, w_bio, _ = self._head(torch.from_numpy(codes).to(self.device))
        return w_tech.float().cpu().numpy(), w_bio.float().cpu().numpy()

    def condition_metadata(self, condition: str) -> dict[str, Any]:
        by_id = {t.id: t.metadata for t in self.card.tracks}
        if condition in by_id:
            return dict(by_id[condition])
        if "=" not in condition:
            raise AnalysisInputError(f"--conditions: {condition!r} is neither a track of the model (e.g. "
                                     f"{', '.join(list(by_id)[:3])}) nor key=value;key=value metadata")
        pairs = [part.partition("=") for part in condition.split(";")]
        return {k.strip(): v.strip() for k, _, v in pairs}


class Reference:
    """Windows of a reference FASTA (pyfaidx), centred on 0-based positions, N past the chromosome ends."""

    def __init__(self, path: str | Path):
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise AnalysisInputError(f"--fasta: {self.path} does not exist")
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=True)
        except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, OSError, ValueError) as err:
            raise AnalysisInputError(f"--fasta: {self.path}: {err}") from None
        self.sizes = {name: len(record) for name, record in self._fasta.records.items()}

    def chrom(self, name: str) -> str | None:
        """The FASTA's name for `name`, accepting chr1 ↔ 1 and chrM ↔ MT; None when absent."""
        aliases = {"chrM": "MT", "MT": "chrM", "M": "chrM", "chrMT": "MT"}
        for candidate in (name, name[3:] if name.startswith("chr") else f"chr{name}", aliases.get(name, "")):
            if candidate in self.sizes:
                return candidate
        return None

    def sequence(self, chrom: str, start: int, end: int) -> str:
        """Bases [start, end) (0-based), N where outside the chromosome."""
        left, right = max(start, 0), min(end, self.sizes[chrom])
        body = self._fasta[chrom][left:right] if right > left else ""
        head = "N" * (left - start)
        return head + body + "N" * (end - start - len(head) - len(body))

    def window(self, chrom: str, centre: int, length: int) -> np.ndarray:
        """uint8 tokens [length] with the 0-based position `centre` at index length // 2."""
        start = centre - length // 2
        return encode(self.sequence(chrom, start, start + length), ambiguous_as_n=True)


def gc_fraction(tokens: np.ndarray) -> np.ndarray:
    """Share of G/C among the called (non-N) bases of each row of uint8 tokens [N, L]."""
    called = (tokens != N_CODE).sum(axis=1)
    return ((tokens == 1) | (tokens == 2)).sum(axis=1) / np.maximum(called, 1)
