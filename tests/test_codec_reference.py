"""The metadata codec is the authors' column encoding: checked value by value against hand-worked examples.

Facts (HealthML/MFD `MetadataColumnEmbedding` / `categorize_multilabel_column`): categories split on ',' without
stripping, a missing value is the label 'nan', labels sorted as strings; YAML `labels:` fix vocabulary and order;
numbers z-scored with the population std; dates reduced to their year and one-hot over the sorted years.
"""
import math

import numpy as np
import pytest

from mfd_common.codec import GroupLayout, MetadataCodec, MetadataError, Variable

ROWS = [
    {"target": "CTCF", "organ": "blood,bone marrow", "age": 30.0, "date": "2016-05-03", "reps": 2},
    {"target": "GATA1", "organ": float("nan"), "age": 60.0, "date": "2012-01-01", "reps": 1},
    {"target": "CTCF", "organ": "liver", "age": 90.0, "date": "2016-11-30", "reps": 2},
]
GROUPS = {"biological": GroupLayout(["target"], ["organ", "age"], 4), "technical": GroupLayout([], ["date", "reps"], 4)}


def fitted(**overrides) -> MetadataCodec:
    variables = [Variable("target", "category"), Variable("organ", "category"), Variable("age", "float"),
                 Variable("date", "date.year"), Variable("reps", "int")]
    for v in variables:
        for key, value in overrides.get(v.name, {}).items():
            setattr(v, key, value)
    return MetadataCodec.fit(variables, GROUPS, ROWS)


def test_vocabularies_scales_and_codes_match_the_reference_by_hand():
    codec = fitted()
    by = codec.by_name
    assert by["target"].vocabulary == ["CTCF", "GATA1"]
    assert by["organ"].vocabulary == ["blood", "bone marrow", "liver", "nan"]  # NaN → 'nan', no stripping
    assert by["date"].vocabulary == ["2012", "2016"]
    assert by["age"].mean == 60.0 and by["age"].std == pytest.approx(math.sqrt(600.0))  # ddof 0
    codes = codec.encode_many(ROWS, strict=False)
    z = (np.array([30.0, 60.0, 90.0]) - 60.0) / math.sqrt(600.0)
    expected = np.array([
        [1, 0, 1, 1, 0, 0, z[0], 0, 1, (2 - 5 / 3) / math.sqrt(2 / 9)],
        [0, 1, 0, 0, 0, 1, z[1], 1, 0, (1 - 5 / 3) / math.sqrt(2 / 9)],
        [1, 0, 0, 0, 1, 0, z[2], 0, 1, (2 - 5 / 3) / math.sqrt(2 / 9)],
    ], dtype=np.float32)
    np.testing.assert_allclose(codes, expected, rtol=1e-6)
    assert codec.encode({"organ": None})[slice(*codec.offsets["organ"])].tolist() == [0, 0, 0, 1]


def test_yaml_labels_fix_the_order_and_yaml_mean_std_fix_the_scale():
    codec = fitted(target={"vocabulary": ["GATA1", "CTCF", "SPI1"]}, age={"mean": 50.0, "std": 10.0, "scale_fixed": True})
    assert codec.by_name["target"].vocabulary == ["GATA1", "CTCF", "SPI1"]
    assert codec.encode({"target": "SPI1"})[:3].tolist() == [0, 0, 1]
    assert codec.encode({"age": 70})[slice(*codec.offsets["age"])][0] == pytest.approx(2.0)
    with pytest.raises(MetadataError, match="outside its labels"):
        fitted(target={"vocabulary": ["GATA1"]})


def test_missing_dates_give_the_reference_float_year_labels():
    rows = [dict(ROWS[0]), dict(ROWS[1], date=None)]
    codec = MetadataCodec.fit([Variable("date", "date.year")], {"biological": GroupLayout([], ["date"], 2),
                                                                 "technical": GroupLayout([], ["date"], 2)}, rows)
    assert codec.by_name["date"].vocabulary == ["2016.0", "nan"]
    assert codec.encode({"date": "2016-02-02"}).tolist() == [1, 0]
    assert codec.encode({"date": None}).tolist() == [0, 1]


@pytest.mark.parametrize("name, value, fragment", [
    ("age", True, "expected a number"), ("age", "yes", "expected a number"), ("age", float("inf"), "finite"),
    ("age", None, "no missing-value category"), ("age", 1e308, "overflows"), ("date", "last year", "date"),
    ("date", 1999, "unknown year"), ("target", "ctcf", "unknown value"), ("nope", 1, "unknown metadata variable"),
    ("target", None, "missing-value category, which no training track had"),
])
def test_bad_values_are_refused_with_the_variable_named(name, value, fragment):
    with pytest.raises(MetadataError) as err:
        fitted().encode({name: value})
    assert err.value.field == name and fragment in str(err.value)


def test_unspecified_policy_mean_or_zeros():
    assert fitted().encode({})[:2].tolist() == pytest.approx([2 / 3, 1 / 3])
    zeros = MetadataCodec.fit([Variable("target", "category")], {"biological": GroupLayout(["target"], ["target"], 2),
                                                                  "technical": GroupLayout([], ["target"], 2)},
                              ROWS, unspecified="zeros")
    assert zeros.encode({}).tolist() == [0, 0]
