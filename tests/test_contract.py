"""The shared contract: tokens, metadata codec and checkpoint round-trip."""
import numpy as np
import pytest
import torch

from mfd_common import tokens
from mfd_common.codec import MetadataCodec, MetadataError
from tests.fixtures.models import tiny_codec


def test_tokens_round_trip_and_reverse_complement():
    codes = tokens.encode("ACGTNacgtn")
    assert codes.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert tokens.decode(tokens.reverse_complement(tokens.encode("AACGTN"))) == "NACGTT"


def test_tokens_reject_iupac_with_position():
    with pytest.raises(tokens.InvalidSequenceError) as err:
        tokens.encode("ACGRT")
    assert err.value.position == 3 and "'R'" in str(err.value)


def test_reference_mode_maps_ambiguity_codes_to_n_but_still_rejects_non_letters():
    assert tokens.encode("ACgRyN", ambiguous_as_n=True).tolist() == [0, 1, 2, 4, 4, 4]
    with pytest.raises(tokens.InvalidSequenceError) as err:
        tokens.encode("AC-G", ambiguous_as_n=True)
    assert err.value.position == 2


def test_codec_encodes_partial_conditions_and_rejects_unknown_values():
    codec = tiny_codec()
    full = codec.encode({"biosample": "K562", "target": "CTCF", "release_year": "2016-03-01"})
    start, end = codec.offsets["biosample"]
    assert full[start:end].tolist() == [0.0, 0.0, 1.0]  # sorted: GM12878, HepG2, K562
    # a variable left out takes the training tracks' mean codes (the reference preset's "unspecified")
    np.testing.assert_allclose(codec.encode({})[start:end], [0.25, 0.25, 0.5])
    multi = codec.encode({"organ": ["blood", "liver"]})
    assert multi[slice(*codec.offsets["organ"])].sum() == 2.0
    assert codec.encode({"organ": "blood,bone marrow"})[slice(*codec.offsets["organ"])].tolist() == [1, 1, 0]
    with pytest.raises(MetadataError) as err:
        codec.encode({"biosample": "K526"})
    assert err.value.field == "biosample" and "K562" in err.value.allowed
    with pytest.raises(MetadataError) as err:
        codec.encode({"release_year": "last year"})
    assert err.value.field == "release_year"
    assert MetadataCodec.from_dict(codec.to_dict()).encode({"lab": "lab-B"}).tolist() == codec.encode({"lab": "lab-B"}).tolist()


def test_checkpoint_round_trip_and_checksum(tiny_checkpoint, tmp_path):
    from training.model.checkpoint import load_checkpoint
    model, card = load_checkpoint(tiny_checkpoint)
    tokens_ = torch.randint(0, 5, (3, card.seq_len), dtype=torch.uint8)
    codes = torch.tensor(card.metadata_codec().encode_many([t.metadata for t in card.tracks]))
    with torch.no_grad():
        out = model(tokens_, codes)
        bias = model.bias.detach()
    assert out["logits"].shape == (3, len(card.tracks))
    np.testing.assert_allclose(out["logits"], out["logits_bio"] + out["logits_tech"] + bias, rtol=1e-5, atol=1e-5)
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    with open(broken / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(broken)
