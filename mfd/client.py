"""API layer (remote): `mfd.Client(url)`, the service's REST API as Python calls that return pandas DataFrames.

The client reads the server's limits from GET /metadata (`max_sequences`, `max_conditions`, `max_body_bytes`) and
splits every call into requests that fit them: windows (or variants) in chunks, and, when there are more
conditions than one request may carry, conditions in chunks too; requests go one after the other (the server
batches windows itself, and one client should not take all of its admission slots). A 503 (overloaded) is
retried with backoff; any other refusal raises `ServiceError` naming the field as the whole input counts it
(`sequences[300]`, not the chunk's `sequences[44]`). Long inputs show a tqdm bar: `progress=None` (the default)
shows it only on a terminal and only when the call needs more than one request.

Example::

    import mfd
    client = mfd.Client("http://127.0.0.1:3000")
    df = client.predict(sequences=[...], conditions=["ENCFF001", {"biosample": "K562", "lab": "lab-B"}])
    df.pivot(index="window", columns="condition_name", values="logit_bio")
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import httpx
import pandas as pd
from tqdm import tqdm

from . import frames, variants as variant_input

if TYPE_CHECKING:
    from .attributions import Attributions

#: Bytes a request spends besides its windows (conditions, flags): subtracted from the body limit.
_OVERHEAD_BYTES = 64 * 1024
_RETRIES_503 = 5


class ServiceError(RuntimeError):
    """A request the service refused: HTTP status, the offending field and the server's message."""

    def __init__(self, status: int, field: str, message: str, allowed: list | None = None):
        self.status, self.field, self.message, self.allowed = status, field, message, allowed
        super().__init__(f"HTTP {status}: {field}: {message}")


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _global_field(field: str, offsets: dict[str, int]) -> str:
    """`sequences[3].x` of a chunk starting at 256 → `sequences[259].x` (the caller's own numbering)."""
    def shift(match: re.Match) -> str:
        name, index = match.group(1), int(match.group(2))
        return f"{name}[{index + offsets.get(name, 0)}]"

    return re.sub(r"\b(sequences|sequence_ids|intervals|variants|conditions)\[(\d+)\]", shift, field)


class Client:
    """A connection to one mfd-serve server (REST). Thread-safe as httpx.Client is; close() or use `with`."""

    model: str | None = None

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 120.0,
                 batch_size: int | None = None, progress: bool | None = None,
                 transport: httpx.BaseTransport | None = None, model: str | None = None):
        """`batch_size` caps windows/variants per request below the server's own limit; `progress`: True, False
        or None (a bar on a terminal when a call needs several requests); `model`: which of a deployment's models
        every call uses (GET /models lists them; None: the server's default)."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.progress = progress
        self._metadata: dict[str, Any] | None = None
        self.model = model

    # ---- plumbing ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"mfd.Client({self.url!r})"

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 offsets: dict[str, int] | None = None) -> dict[str, Any]:
        if self.model is not None:  # route every call to the chosen model (service.core.models)
            body = {"model": self.model, **body} if body is not None else None
            params = {"model": self.model} if body is None else None
        else:
            params = None
        for attempt in range(_RETRIES_503 + 1):
            response = self._http.request(method, path, json=body, params=params)
            if response.status_code != 503 or attempt == _RETRIES_503:
                break
            time.sleep(min(0.1 * 2 ** attempt, 2.0))  # overloaded: nothing was computed, so a retry is safe
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                field, message, allowed = error.get("field", "?"), error.get("message", ""), error.get("allowed")
            except (ValueError, KeyError, TypeError):
                field, message, allowed = "response", response.text[:500], None
            raise ServiceError(response.status_code, _global_field(field, offsets or {}), message, allowed)
        return response.json()

    def metadata(self, *, refresh: bool = False) -> dict[str, Any]:
        """GET /metadata: variables (allowed values, numeric ranges), trained tracks, seq_len, genome, limits."""
        if self._metadata is None or refresh:  # of this client's model (GET /metadata?model=…)
            self._metadata = self._request("GET", "/metadata")
        return self._metadata

    def models(self) -> pd.DataFrame:
        """GET /models: the deployment's models (name, default, window, version, genome), one row each."""
        return pd.DataFrame(self._request("GET", "/models")["models"])

    def limits(self) -> dict[str, int]:
        """The server's request limits (from /metadata): max_sequences, max_conditions, max_body_bytes, …"""
        return dict(self.metadata().get("limits", {}))

    def tracks(self) -> pd.DataFrame:
        """The trained tracks and their metadata, one row per track."""
        return pd.DataFrame([{"track": t["id"], **t["metadata"]} for t in self.metadata()["tracks"]])

    def _chunk_sizes(self, item_bytes: int) -> tuple[int, int]:
        limits = self.limits()
        windows = limits.get("max_sequences", 256)
        if "max_body_bytes" in limits:
            windows = min(windows, max(1, (limits["max_body_bytes"] - _OVERHEAD_BYTES) // item_bytes))
        if self.batch_size is not None:
            windows = min(windows, self.batch_size)
        return max(1, windows), max(1, limits.get("max_conditions", 512))

    def _bar(self, total: int, requests: int, unit: str) -> tqdm:
        show = self.progress
        disable = (None if requests > 1 else True) if show is None else not show  # None: tqdm shows it on a tty
        return tqdm(total=total, unit=unit, disable=disable, desc="mfd")

    # ---- scoring ----------------------------------------------------------------------------------------------
    def predict(self, sequences: Sequence[str] | None = None, *, intervals: Sequence[Any] | None = None,
                conditions: Sequence[Any], biological_only: bool = False, reverse_complement: bool = False,
                sequence_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Scores per (window, condition) as a DataFrame (POST /predict).

        Args:
            sequences: DNA windows of the model's length (`metadata()["seq_len"]`; one string is one window), or
            intervals: genomic windows of the server's FASTA: dicts {chrom, start, end[, id]} (BED, 0-based), a
                DataFrame with those columns, or (chrom, start, end) tuples.
            conditions: track ids and/or metadata dicts (see GET /metadata); a single one may be given bare.
            biological_only: technical features held at their mean (logit_tech = 0).
        Returns:
            columns window, id, [chrom, start, end,] condition, condition_name, track, probability, logit,
            logit_bio, logit_tech, bias; `df.attrs` holds the model, backend and resolved conditions.
        """
        if (sequences is None) == (intervals is None):
            raise ValueError("give exactly one of `sequences` or `intervals`")
        conditions = [conditions] if isinstance(conditions, (str, dict)) else list(conditions)
        if isinstance(sequences, str):
            sequences = [sequences]  # one window, not a list of one-letter windows
        if sequences is not None:
            items: list[Any] = [str(s) for s in sequences]
            key, item_bytes = "sequences", self.metadata()["seq_len"] + 32
            ids = [str(i) for i in sequence_ids] if sequence_ids is not None else [str(i) for i in range(len(items))]
            if len(ids) != len(items):
                raise ValueError(f"sequence_ids: {len(ids)} ids for {len(items)} sequences")
        else:
            items, key, item_bytes, ids = _intervals(intervals), "intervals", 160, None
        rows: list[dict[str, Any]] = []
        last: dict[str, Any] = {}
        for start, end, c_start, c_end, bar in self._plan(len(items), len(conditions), item_bytes, "window"):
            body: dict[str, Any] = {key: items[start:end], "conditions": conditions[c_start:c_end],
                                    "biological_only": biological_only, "reverse_complement": reverse_complement}
            if ids is not None:
                body["sequence_ids"] = ids[start:end]
            last = self._request("POST", "/predict", body, {key: start, "sequence_ids": start, "conditions": c_start})
            rows += frames.predict_rows(last, conditions, window_offset=start, condition_offset=c_start)
            bar.update(end - start if c_end == len(conditions) else 0)
        df = frames.frame(rows, ["window", "condition"])
        df.attrs.update(model=last.get("model"), backend=last.get("backend"), biological_only=biological_only,
                        reverse_complement=reverse_complement)
        return df

    def predict_variants(self, variants: pd.DataFrame | str | Path | list[dict[str, Any]], *,
                         conditions: Sequence[Any], biological_only: bool = False,
                         ensemble: dict[str, Any] | None = None) -> pd.DataFrame:
        """Variant effects (alt − ref) per (variant, condition) as a DataFrame (POST /predict_variants).

        Args:
            variants: a DataFrame (chrom, pos 1-based, ref, alt[, id]), a VCF/BCF path (plain, gzip, BGZF; one
                variant per ALT allele) or a list of such dicts.
            ensemble: e.g. {"shifts": 1, "strands": 1, "geometry": "centred"}; default: the server's (the paper's).
        Returns:
            columns variant, id, chrom, pos, ref, alt, condition, condition_name, track, ref/alt probability and
            logit, delta_probability, delta_logit, delta_logit_bio, delta_logit_tech. ALT alleles that cannot be
            scored (symbolic, `*`) are listed in `df.attrs["skipped"]`.
        """
        items, skipped = variant_input.load(variants)
        conditions = [conditions] if isinstance(conditions, (str, dict)) else list(conditions)
        rows: list[dict[str, Any]] = []
        last: dict[str, Any] = {}
        for start, end, c_start, c_end, bar in self._plan(len(items), len(conditions), 200, "variant"):
            body: dict[str, Any] = {"variants": items[start:end], "conditions": conditions[c_start:c_end],
                                    "biological_only": biological_only}
            if ensemble is not None:
                body["ensemble"] = ensemble
            last = self._request("POST", "/predict_variants", body, {"variants": start, "conditions": c_start})
            rows += frames.variant_rows(last, conditions, variant_offset=start, condition_offset=c_start)
            bar.update(end - start if c_end == len(conditions) else 0)
        df = frames.frame(rows, ["variant", "condition"])
        df.attrs.update(model=last.get("model"), ensemble=last.get("ensemble"), biological_only=biological_only,
                        skipped=skipped)
        return df

    def _plan(self, n: int, k: int, item_bytes: int, unit: str) -> Iterator[tuple[int, int, int, int, tqdm]]:
        """(start, end, condition start, condition end, bar) for every request a call needs, in input order."""
        if n == 0:
            raise ValueError(f"no {unit}s to score")
        if k == 0:
            raise ValueError("conditions: give at least one condition")
        windows, per_request = self._chunk_sizes(item_bytes)
        plan = [(s, e, cs, ce) for s, e in _chunks(n, windows) for cs, ce in _chunks(k, per_request)]
        with self._bar(n, len(plan), unit) as bar:
            for start, end, c_start, c_end in plan:
                yield start, end, c_start, c_end, bar

    # ---- attribution ------------------------------------------------------------------------------------------
    def attribute(self, sequences: Sequence[str] | None = None, *, intervals: Sequence[Any] | None = None,
                  conditions: Sequence[Any], method: str = "ism", parts: Sequence[str] | None = None,
                  window: tuple[int, int] | dict[str, int] | None = None, reverse_complement: bool = False,
                  steps: int | None = None, baseline: str = "zero",
                  sequence_ids: Sequence[str] | None = None) -> "Attributions":
        """Per-base attribution maps (POST /attribute) as `mfd.attributions.Attributions`: numpy arrays with
        named axes, `maps` [window, condition, part, position, base] over bases A, C, G, T.

        Args:
            sequences / intervals / conditions / sequence_ids: as in `predict`.
            method: `ism` (any server), `gradient_x_input` or `integrated_gradients` (embedded backend only).
            parts: any of `logit`, `logit_bio`, `logit_tech` (default all three).
            window: (start, end) positions of each window to attribute (0-based, end exclusive); ISM mutates
                only those.
            steps, baseline: integrated gradients' quadrature nodes (default 64) and baseline (`zero`, `uniform`).
        Calls are cut to fit the server's `max_attribution_passes` / `max_attribution_floats` (GET /metadata).
        """
        from .attributions import ALL_PARTS, combine, request_plan

        if (sequences is None) == (intervals is None):
            raise ValueError("give exactly one of `sequences` or `intervals`")
        conditions = [conditions] if isinstance(conditions, (str, dict)) else list(conditions)
        if isinstance(sequences, str):
            sequences = [sequences]
        if sequences is not None:
            items: list[Any] = [str(s) for s in sequences]
            key = "sequences"
            ids = [str(i) for i in sequence_ids] if sequence_ids is not None else [str(i) for i in range(len(items))]
            if len(ids) != len(items):
                raise ValueError(f"sequence_ids: {len(ids)} ids for {len(items)} sequences")
        else:
            items, key, ids = _intervals(intervals), "intervals", None
        if not items:
            raise ValueError("no windows to attribute")
        if not conditions:
            raise ValueError("conditions: give at least one condition")
        seq_len = self.metadata()["seq_len"]
        if isinstance(window, (tuple, list)):
            window = {"start": window[0], "end": window[1]}
        width = (window["end"] - window["start"]) if isinstance(window, dict) and {"start", "end"} <= set(window) \
            else seq_len
        n_per, k_per = request_plan(n=len(items), k=len(conditions), width=max(1, int(width)),
                                    parts=len(parts) if parts is not None else len(ALL_PARTS), method=method,
                                    steps=steps, strands=2 if reverse_complement else 1, limits=self.limits(),
                                    batch_size=self.batch_size)
        options: dict[str, Any] = {"method": method, "reverse_complement": reverse_complement}
        for name, value in (("parts", list(parts) if parts is not None else None), ("window", window),
                            ("steps", steps)):
            if value is not None:
                options[name] = value
        if baseline != "zero":
            options["baseline"] = baseline
        plan = [(s, e) for s, e in _chunks(len(items), n_per)]
        blocks = []
        with self._bar(len(items), len(plan) * -(-len(conditions) // k_per), "window") as bar:
            for start, end in plan:
                row = []
                for c_start, c_end in _chunks(len(conditions), k_per):
                    body = {key: items[start:end], "conditions": conditions[c_start:c_end], **options}
                    if ids is not None:
                        body["sequence_ids"] = ids[start:end]
                    row.append(self._request("POST", "/attribute", body,
                                             {key: start, "sequence_ids": start, "conditions": c_start}))
                blocks.append(row)
                bar.update(end - start)
        return combine(blocks, conditions)


def _intervals(intervals: Any) -> list[dict[str, Any]]:
    """Intervals as /predict's dicts, from dicts, (chrom, start, end) tuples or a DataFrame with those columns."""
    if isinstance(intervals, pd.DataFrame):
        missing = [c for c in ("chrom", "start", "end") if c not in intervals.columns]
        if missing:
            raise ValueError(f"intervals: the DataFrame lacks column(s) {', '.join(missing)}")
        intervals = intervals.to_dict("records")
    out = []
    for n, item in enumerate(intervals):
        if isinstance(item, dict):
            entry = {"chrom": str(item["chrom"]), "start": int(item["start"]), "end": int(item["end"])}
            if item.get("id") is not None:
                entry["id"] = str(item["id"])
        elif isinstance(item, (tuple, list)) and len(item) in (3, 4):
            entry = {"chrom": str(item[0]), "start": int(item[1]), "end": int(item[2])}
            if len(item) == 4:
                entry["id"] = str(item[3])
        else:
            raise ValueError(f"intervals[{n}]: expected a dict or a (chrom, start, end) tuple")
        out.append(entry)
    return out
