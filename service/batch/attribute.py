"""Service layer (batch): `python -m service.batch attribute regions.bed --conditions … --out DIR`: per-base
contribution tracks of the biological and the technical logit, as bigWig, with a pyGenomeTracks `tracks.ini`.

Each region (a BED line, or one `chrom:start-end`) is attributed inside the model window of `seq_len` bases centred
on the region's centre (the window the model would score for it); only the region's own bases are attributed
(ISM mutates only them), so a region may be at most `seq_len` bases long and regions may not overlap (a bigWig
holds one value per base). Per condition, two files:

    DIR/<condition>.bio.contrib.bw    contribution of each base to logit_bio
    DIR/<condition>.tech.contrib.bw   contribution of each base to logit_tech
    DIR/tracks.ini                    both tracks per condition for `pyGenomeTracks --tracks tracks.ini --region …`

The value per base (`Attribution.per_base`, docs/attributions.md):
  * `ism` (default; any backend): minus the mean effect of the three substitutions, i.e. what the reference base
    adds over the average alternative. An N has no reference base: no value is written there.
  * `gradient_x_input` / `integrated_gradients` (embedded backend): the base's own entry of the map (the
    dinucleotide attribution projected onto bases, half to each base of a pair). For these two, the biological
    and technical tracks add up to the contribution to the whole logit.
Everything is computed before any file is written; outputs appear whole (temporary file + rename). Bad input
(a region too long, overlapping or off the chromosome, an unknown condition or method) ends the job with one line
and exit status 2.
"""
from __future__ import annotations

import argparse
import configparser
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from mfd_common import tokens as dna

from ..core.attribution import AttributeOptions, Attributor
from ..core.attributions import METHODS
from ..core.domain import Windows
from ..core.engine import Engine
from ..core.genome import GenomeError
from ..errors import RequestError
from ..settings import Settings
from .runtime import add_engine_options, parse_conditions, resolve, settings_from
from .shards import BatchError, atomic_output
from .tracks import Region, parse_regions

PARTS = ("logit_bio", "logit_tech")
SUFFIX = {"logit_bio": "bio", "logit_tech": "tech"}
COLORS = {"logit_bio": "#1b7837", "logit_tech": "#b2182b"}


def add_parser(sub: Any) -> None:
    a = sub.add_parser("attribute", help="per-base contribution bigWigs (biological / technical) of BED regions")
    a.add_argument("regions", help="a BED file of regions (0-based, half-open), or one chrom:start-end "
                                   "(1-based, inclusive); each at most the model's window long, none overlapping")
    a.add_argument("--out", type=Path, required=True,
                   help="output directory for <condition>.bio.contrib.bw, <condition>.tech.contrib.bw, tracks.ini")
    a.add_argument("--method", default="ism", help=f"one of {', '.join(METHODS)} (default ism)")
    a.add_argument("--steps", type=int, default=None, help="integrated_gradients: quadrature nodes (default 64)")
    a.add_argument("--strands", type=int, choices=(1, 2), default=1,
                   help="2: average with the reverse complement, as /attribute's reverse_complement")
    a.add_argument("--no-progress", action="store_true", help="nothing is shown either way (accepted as by the "
                                                                   "other commands)")
    add_engine_options(a)
    a.set_defaults(run=run_attribute)


@contextlib.asynccontextmanager
async def _engine(args: argparse.Namespace) -> AsyncIterator[Engine]:
    """The service's engine with no request-size limits on attribution (a batch job bounds itself by regions)."""
    base = settings_from(args)
    settings = Settings.model_validate({**base.model_dump(), "max_attribution_passes": 2**62,
                                        "max_attribution_floats": 2**62})
    try:
        engine = Engine(settings)
    except GenomeError as exc:
        raise BatchError(str(exc)) from None
    try:
        yield engine          # started by the caller once the regions and conditions are checked
    finally:
        await engine.close()


def placed(regions: list[Region], lengths: dict[str, int], seq_len: int) -> list[tuple[Region, int]]:
    """Each region with the start of the window centred on it, sorted in FASTA order; BatchError when a region is
    longer than the window, its window leaves the chromosome, or two regions overlap."""
    order = {name: i for i, name in enumerate(lengths)}
    out: list[tuple[Region, int]] = []
    for r in sorted(regions, key=lambda r: (order[r.chrom], r.start)):
        where = f"region {r.chrom}:{r.start + 1}-{r.end}"
        if r.end - r.start > seq_len:
            raise BatchError(f"{where}: {r.end - r.start} bases, more than the model's window of {seq_len}; "
                             "split it into regions of at most that length")
        window = (r.start + r.end) // 2 - seq_len // 2
        if window < 0 or window + seq_len > lengths[r.chrom]:
            raise BatchError(f"{where}: the {seq_len}-base window centred on it runs off {r.chrom} "
                             f"(length {lengths[r.chrom]})")
        if out and out[-1][0].chrom == r.chrom and r.start < out[-1][0].end:
            raise BatchError(f"{where} overlaps {r.chrom}:{out[-1][0].start + 1}-{out[-1][0].end}; "
                             "merge overlapping regions first (e.g. bedtools merge)")
        out.append((r, window))
    return out


def tracks_ini(conditions: list[Any], method: str) -> str:
    """A pyGenomeTracks configuration: per condition the biological then the technical contribution track."""
    config = configparser.ConfigParser()
    config.optionxform = str  # keep key case
    for named in conditions:
        for part in PARTS:
            config[f"{named.name} {SUFFIX[part]}"] = {
                "file": f"{named.name}.{SUFFIX[part]}.contrib.bw", "file_type": "bigwig",
                "title": f"{named.name}: {'biological' if part == 'logit_bio' else 'technical'} contribution "
                         f"({method})",
                "height": "3", "color": COLORS[part], "negative_color": COLORS[part], "alpha": "0.9",
                "summary_method": "mean", "number_of_bins": "2000", "nans_to_zeros": "false",
                "show_data_range": "true"}
        config[f"spacer {named.name}"] = {"height": "0.3"}
    config["x-axis"] = {"where": "bottom"}
    lines = []
    for section in config.sections():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in config[section].items()]
        lines.append("")
    return "\n".join(lines)


def _batch_message(exc: RequestError) -> str:
    allowed = f" (allowed: {', '.join(map(str, exc.allowed[:10]))})" if exc.allowed else ""
    field = {"method": "--method", "steps": "--steps", "baseline": "--baseline"}.get(exc.field, exc.field)
    return f"{field}: {exc.message}{allowed}"


async def run_attribute(args: argparse.Namespace) -> dict[str, Any]:
    import pyBigWig

    conditions = parse_conditions(args.conditions)
    async with _engine(args) as engine:
        assert engine.genome is not None
        regions = placed(parse_regions(args.regions, engine.genome), engine.genome.lengths, engine.seq_len)
        resolved = resolve(engine, conditions)
        attributor = Attributor(engine)
        try:
            attributor.plan(np.zeros((1, engine.seq_len), np.uint8), len(resolved),
                            AttributeOptions(args.method, PARTS, None, args.strands == 2, args.steps))
        except RequestError as exc:   # the method and its options, before loading the model
            raise BatchError(_batch_message(exc)) from None
        await engine.start()
        per_base: list[np.ndarray] = []            # per region [K, P, W]
        try:
            for region, window in regions:
                sequence = engine.genome.fetch(region.chrom, window, window + engine.seq_len, field="regions")
                options = AttributeOptions(args.method, PARTS, (region.start - window, region.end - window),
                                           args.strands == 2, args.steps)
                result = await attributor.attribute(Windows(dna.encode_many([sequence]), [region.chrom]),
                                                    resolved, options)
                per_base.append(result.per_base()[0])
        except RequestError as exc:
            raise BatchError(_batch_message(exc)) from None
        finally:
            attributor.close()
        lengths = list(engine.genome.lengths.items())
    args.out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for k, named in enumerate(conditions):
        for j, part in enumerate(PARTS):
            path = args.out / f"{named.name}.{SUFFIX[part]}.contrib.bw"
            with atomic_output(path) as tmp:
                bw = pyBigWig.open(str(tmp), "w")
                try:
                    bw.addHeader(lengths, maxZooms=10)
                    for (region, _), values in zip(regions, per_base):
                        v = values[k, j].astype(np.float64)
                        keep = np.flatnonzero(np.isfinite(v))           # ISM: no value at an N
                        if keep.size:
                            starts = (region.start + keep).tolist()
                            bw.addEntries([region.chrom] * keep.size, starts, ends=[s + 1 for s in starts],
                                          values=v[keep].tolist())
                finally:
                    bw.close()
            files.append(str(path))
    with atomic_output(args.out / "tracks.ini") as tmp:
        tmp.write_text(tracks_ini(conditions, args.method))
    return {"command": "attribute", "method": args.method, "regions": len(regions),
            "bases": int(sum(r.end - r.start for r, _ in regions)), "files": files,
            "tracks_ini": str(args.out / "tracks.ini")}
