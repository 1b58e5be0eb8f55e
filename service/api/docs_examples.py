"""Service layer (api): worked request examples that run as written against the server that shows them.

The docs page (Swagger UI) sends an example exactly as listed, so every value comes from what this server
serves: a real window of the model's length (read from the configured FASTA, or a fixed seeded sequence without
one), a trained track id, metadata values from the model's vocabularies (a combination no training track had),
and an interval and a variant on the configured genome with the reference allele read from it. Without a FASTA
the interval and variant examples are left out (such requests need MFD_FASTA).
"""
from __future__ import annotations

import random
from typing import Any

#: A window this far into the first long-enough contig (past telomeric N runs of real assemblies, if it is long).
GENOME_OFFSET = 10_000
EXAMPLE_SEED = 2177


def _window_start(length: int, seq_len: int, margin: int) -> int:
    start = GENOME_OFFSET if length >= GENOME_OFFSET + seq_len + margin else (length - seq_len) // 2
    return max(start, 0)


def _genome_window(engine: Any, margin: int) -> tuple[str, int] | None:
    """(chrom, start) of a window of seq_len + margin bases on the configured genome, or None."""
    genome, seq_len = engine.genome, engine.card.seq_len
    if genome is None:
        return None
    for chrom, length in genome.lengths.items():
        if length >= seq_len + margin:
            return chrom, _window_start(length, seq_len, margin)
    return None


def _never_measured(engine: Any) -> dict[str, Any]:
    """Two categorical values that occur in training tracks, but never in the same track."""
    codec = engine.repository.codec
    tracks = [t.metadata for t in engine.card.tracks]
    labelled = [v.name for v in codec.variables if v.type == "category" and v.group == "biological"]
    labelled += [v.name for v in codec.variables if v.type == "category" and v.group != "biological"]
    for i, first in enumerate(labelled):
        for second in labelled[i + 1:]:
            seen = {(str(t.get(first)), str(t.get(second))) for t in tracks}
            for a in sorted({str(t[first]) for t in tracks if first in t}):
                for b in sorted({str(t[second]) for t in tracks if second in t}):
                    if (a, b) not in seen and a in codec.by_name[first].vocabulary \
                            and b in codec.by_name[second].vocabulary:
                        return {first: a, second: b}
    return {k: v for k, v in (tracks[0] if tracks else {}).items() if k in labelled[:2]}


def predict_examples(engine: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    seq_len = engine.card.seq_len
    track = engine.card.tracks[0].id if engine.card.tracks else None
    located = _genome_window(engine, 0)
    if located is not None:
        chrom, start = located
        window = engine.genome.fetch(chrom, start, start + seq_len, field="example")
        origin = f"bases {chrom}:{start}-{start + seq_len} of the configured genome"
    else:
        rng = random.Random(EXAMPLE_SEED)
        window = "".join(rng.choice("ACGT") for _ in range(seq_len))
        origin = "a fixed random sequence"
    combination = _never_measured(engine)
    examples: dict[str, tuple[str, dict[str, Any]]] = {}
    if track is not None:
        examples["track"] = (f"Score one {seq_len}-base window ({origin}) under the trained track {track}",
                             {"sequences": [window], "conditions": [track]})
    examples["never_measured"] = (
        "A combination of metadata values no training track had; omitted variables are averaged",
        {"sequences": [window], "conditions": [combination]})
    if located is not None:
        chrom, start = located
        examples["biological_only"] = (
            "The biological read-out alone (technical component at its mean), on a genome interval",
            {"intervals": [{"chrom": chrom, "start": start, "end": start + seq_len}],
             "conditions": [combination], "biological_only": True})
    return examples


def variant_examples(engine: Any, read_margin: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """An SNV at a real base of the configured genome; `read_margin` = extra bases the ensemble reads."""
    located = _genome_window(engine, read_margin + 2)
    if located is None:
        return {}
    chrom, start = located
    centre = start + (engine.card.seq_len + read_margin) // 2
    for pos0 in range(centre, centre + 50):
        ref = engine.genome.fetch(chrom, pos0, pos0 + 1, field="example").upper()
        if ref in "ACGT":
            alt = {"A": "G", "G": "A", "C": "T", "T": "C"}[ref]
            conditions: list[Any] = [engine.card.tracks[0].id] if engine.card.tracks else []
            conditions.append(_never_measured(engine))
            return {"snv": (f"Effect of an SNV at {chrom}:{pos0 + 1} (VCF-style, 1-based pos; ref {ref} as in "
                            "the genome) under a track and a metadata condition",
                            {"variants": [{"chrom": chrom, "pos": pos0 + 1, "ref": ref, "alt": alt,
                                           "id": "example_snv"}], "conditions": conditions})}
    return {}
