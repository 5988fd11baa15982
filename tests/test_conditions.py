
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nmflowgan.conditions import ConditionSpace
from nmflowgan.errors import BadInputError


def test_unknown_camera_names_value_and_known_cameras(space):
    with pytest.raises(ValueError, match=r"'XX'.*IP, S6, N6"):
        space.encode("XX", 800, 1)


@pytest.mark.parametrize("iso", [0, -100, float("nan"), float("inf"), "fast", None])
def test_bad_iso_values_raise(space, iso):
    with pytest.raises(ValueError, match="ISO"):
        space.encode("S6", iso, 1)


def test_onehot_refuses_iso_outside_its_set_and_lists_known():
    space = ConditionSpace(("S6",), (100, 800), "onehot")
    with pytest.raises(ValueError, match=r"400.*100, 800"):
        space.encode("S6", 400, 1)


def test_continuous_accepts_between_and_refuses_outside_unless_extrapolating():
    space = ConditionSpace(("S6",), (100, 1600), "continuous")
    assert space.encode("S6", 400, 1).features[0, -1].item() == pytest.approx(0.0)
    assert space.encode("S6", 100, 1).features[0, -1].item() == pytest.approx(-1.0)
    assert space.encode("S6", 1600, 1).features[0, -1].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"6400.*100-1600"):
        space.encode("S6", 6400, 1)
    assert space.encode("S6", 6400, 1, extrapolate=True).features[0, -1].item() == pytest.approx(2.0)


def test_onehot_features_and_cells():
    space = ConditionSpace(("IP", "S6"), (100, 800), "onehot")
    cond = space.encode(["S6", "IP"], [800, 100])
    assert cond.features.tolist() == [[0, 1, 0, 1], [1, 0, 1, 0]]
    assert cond.cell.tolist() == [3, 0] and cond.cell.dtype == torch.long
    assert space.n_cells == 4 and ConditionSpace(("IP", "S6"), (100, 800), "continuous").n_cells == 0
    with pytest.raises(BadInputError, match="not one of the ISOs this one-hot model was trained on: 100, 800"):
        space.iso.check(400)


def test_mismatched_batch_lengths_raise(space):
    with pytest.raises(BadInputError, match=r"2 camera\(s\) and 3 ISO\(s\)"):
        space.encode(["IP", "S6"], [100, 800, 3200])


@given(st.floats(min_value=100, max_value=3200), st.floats(min_value=100, max_value=3200))
def test_continuous_feature_is_monotone_and_in_range(iso, other):
    space = ConditionSpace(("S6",), (100, 3200), "continuous")

    def feature(value):
        return space.encode("S6", value, 1).features[0, -1].item()

    assert -1 - 1e-6 <= feature(iso) <= 1 + 1e-6
    if iso < other * (1 - 1e-6):
        assert feature(iso) < feature(other)


def test_continuous_feature_spans_the_trained_range_on_a_log_scale():
    space = ConditionSpace(("S6",), (100, 400, 3200), "continuous")
    feature = {iso: space.encode("S6", iso, 1).features[0, -1].item() for iso in (100, 400, 1600, 3200)}
    assert feature[100] == pytest.approx(-1) and feature[3200] == pytest.approx(1)
    # equal ISO ratios are equal steps: 100 -> 400 and 400 -> 1600 are both a factor of 4
    assert feature[400] - feature[100] == pytest.approx(feature[1600] - feature[400])
    assert feature[1600] - feature[400] == pytest.approx(2 * (feature[3200] - feature[1600]))


def test_a_condition_space_round_trips_through_its_dict(space):
    assert ConditionSpace.from_dict(space.to_dict()) == space


def test_knows_matches_what_encode_accepts():
    continuous = ConditionSpace(("S6", "N6"), (100, 1600), "continuous")
    assert continuous.knows("S6", 400) and continuous.knows("N6", 1600)
    assert not continuous.knows("S6", 3200) and not continuous.knows("IP", 400)
    onehot = ConditionSpace(("S6",), (100, 1600), "onehot")
    assert onehot.knows("S6", 1600) and not onehot.knows("S6", 400)


def test_extrapolation_reaches_one_trained_span_beyond_either_end_and_no_further():
    space = ConditionSpace(("S6",), (100, 1600), "continuous")
    assert space.encode("S6", 25600, 1, extrapolate=True).features[0, -1].item() == pytest.approx(3.0)
    assert space.encode("S6", 6.25, 1, extrapolate=True).features[0, -1].item() == pytest.approx(-3.0)
    for iso in (1e30, 26000, 6.0):
        with pytest.raises(ValueError, match=r"beyond what extrapolation reaches from the trained range 100-1600"):
            space.encode("S6", iso, 1, extrapolate=True)
    single = ConditionSpace(("S6",), (800,), "continuous")  # a range of one ISO reaches a factor of 4
    single.encode("S6", 3200, 1, extrapolate=True)
    with pytest.raises(ValueError, match="200-3200"):
        single.encode("S6", 3300, 1, extrapolate=True)
