"""Contract (mfd_common): DNA ↔ uint8 tokens, the wire format of the trunk (1 byte per base, one-hot happens inside the
model).

Codes: A=0, C=1, G=2, T=3, N=4. Lower case (soft-masked repeats in reference FASTAs) maps like upper case.
IUPAC ambiguity codes other than N are rejected rather than silently turned into N: a caller who sends them
has most likely sent the wrong file, and a quietly altered sequence would give a quietly altered score.
"""
from __future__ import annotations

import numpy as np

ALPHABET = "ACGTN"
N_CODE = 4
COMPLEMENT_CODES = np.array([3, 2, 1, 0, 4], dtype=np.uint8)

_LOOKUP = np.full(256, 255, dtype=np.uint8)
for _code, _base in enumerate(ALPHABET):
    _LOOKUP[ord(_base)] = _code
    _LOOKUP[ord(_base.lower())] = _code
# Reference genomes carry IUPAC ambiguity codes (R, Y, K, M…) in a few places; there they mean "unknown base".
_LOOKUP_AMBIGUOUS_AS_N = _LOOKUP.copy()
for _letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    for _byte in (ord(_letter), ord(_letter.lower())):
        if _LOOKUP_AMBIGUOUS_AS_N[_byte] == 255:
            _LOOKUP_AMBIGUOUS_AS_N[_byte] = N_CODE
# The same tables as bytes.translate() tables: a C loop over the string's bytes, ~10× faster than numpy fancy
# indexing for a 2 kb window (this runs once per window on every request).
_TABLE = _LOOKUP.tobytes()
_TABLE_AMBIGUOUS_AS_N = _LOOKUP_AMBIGUOUS_AS_N.tobytes()


INVALID_CODE = 255
INVALID_BYTE = bytes([INVALID_CODE])


class InvalidSequenceError(ValueError):
    """A sequence holds letters outside A/C/G/T/N; `position` is the first offending 0-based index."""

    def __init__(self, position: int, letter: str):
        self.position = position
        self.letter = letter
        super().__init__(f"invalid base {letter!r} at position {position}; allowed: A, C, G, T, N (any case)")


def encode(sequence: str, *, ambiguous_as_n: bool = False) -> np.ndarray:
    """Encode a DNA string to uint8 codes; raises InvalidSequenceError on any other character.

    `ambiguous_as_n` maps every other letter to N: right for a reference FASTA, wrong for a request (see above).
    """
    codes = bytearray(sequence.encode("ascii", errors="replace").translate(
        _TABLE_AMBIGUOUS_AS_N if ambiguous_as_n else _TABLE))
    first = codes.find(INVALID_BYTE)
    if first >= 0:
        raise InvalidSequenceError(first, sequence[first])
    return np.frombuffer(codes, dtype=np.uint8)


def encode_ascii(raw: np.ndarray) -> np.ndarray:
    """ASCII bytes (uint8, any shape) → codes of the same shape, INVALID_CODE where a byte is no base.

    The batch form of `encode` for request paths: one table lookup for a whole [N, L] block instead of a
    Python call per window. Callers check `first_invalid` to report the offending window and position.
    """
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    return np.frombuffer(bytearray(raw.tobytes().translate(_TABLE)), dtype=np.uint8).reshape(raw.shape)


def encode_many(sequences: "list[str]") -> np.ndarray:
    """[N, L] codes for N equal-length sequences in one lookup; InvalidSequenceError (row in `.row`) if any is bad."""
    length = len(sequences[0]) if sequences else 0
    raw = "".join(sequences).encode("ascii", errors="replace").translate(_TABLE)
    if len(raw) != length * len(sequences):
        raise ValueError("encode_many needs sequences of equal length")
    codes = np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(len(sequences), length)
    bad = first_invalid(codes) if INVALID_BYTE in raw else None
    if bad is not None:
        row, position = bad
        error = InvalidSequenceError(position, sequences[row][position])
        error.row = row  # type: ignore[attr-defined]
        raise error
    return codes


def first_invalid(codes: np.ndarray, limit: int = N_CODE) -> "tuple[int, int] | None":
    """(row, position) of the first code above `limit` in a [N, L] block (row-major order), or None."""
    if codes.size == 0 or int(codes.max()) <= limit:  # the common case: one SIMD pass, no mask array
        return None
    mask = codes > limit
    flat = int(np.argmax(mask.reshape(-1)))
    return divmod(flat, codes.shape[1])


def decode(codes: np.ndarray) -> str:
    """Inverse of `encode` (upper case)."""
    return "".join(ALPHABET[c] for c in np.asarray(codes, dtype=np.uint8))


def reverse_complement(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of token arrays along the last axis (works on [L] and [N, L])."""
    return COMPLEMENT_CODES[np.asarray(codes)][..., ::-1].copy()
