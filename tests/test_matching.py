"""`match`: the model's camera and ISO that explain a user's pairs best, and the ladder of ISOs it searches."""

import json
import math

import pytest

from nmflowgan.cli import main
from nmflowgan.data.simcam import simulate
from nmflowgan.errors import BadInputError
from nmflowgan.matching import ISO_STEPS, candidate_isos, match_pairs
from nmflowgan.models.noise_model import NoiseModel


@pytest.fixture(scope="module")
def builtin():
    return NoiseModel.load("builtin")


@pytest.fixture(scope="module")
def v3_pairs(tmp_path_factory):
    """Simulator pairs of camera V3 (one of the built-in model's) at ISO 800 and 3200."""
    return simulate(tmp_path_factory.mktemp("match") / "v3", cameras=["V3"], isos=[800, 3200], scenes=3, size_px=96,
                    progress=False)


def test_the_iso_ladder_spans_the_models_range_and_holds_the_pairs_own(builtin):
    low, high = builtin.space.iso_range
    ladder = candidate_isos(builtin, 1000)
    assert ladder[0] == pytest.approx(low) and ladder[-1] == pytest.approx(high) and 1000 in ladder
    assert len(ladder) == ISO_STEPS + 1
    ratios = [b / a for a, b in zip(ladder, ladder[1:], strict=False) if 1000 not in (a, b)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)  # evenly spaced in log-ISO
    assert len(candidate_isos(builtin, 1e6)) == ISO_STEPS  # outside the range: not tried


def test_pairs_of_a_known_camera_find_it_and_an_iso_near_their_own(builtin, v3_pairs):
    found = match_pairs(builtin, v3_pairs, "train", patches=16, cameras=["V1", "V3", "V5", "A0"], device="cpu",
                        progress=False)
    assert [(m.camera, m.iso) for m in found] == [("V3", 800.0), ("V3", 3200.0)]
    for match in found:
        assert match.model_camera == "V3"
        assert abs(math.log(match.model_iso / match.iso)) <= math.log(2.2)  # within one step of the ladder
        assert match.nll == min(match.by_camera.values()) and 0 < match.kld < 0.1
    assert found[0].nll < found[1].nll  # less noise, a higher density per value


def test_match_prints_json_and_refuses_unknown_cameras(builtin, v3_pairs, capsys):
    assert main(["match", "--data", str(v3_pairs), "--patches", "2", "--json", "--quiet", "--device", "cpu"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {m["camera"] for m in found} == {"V3"} and all(m["model_camera"] in builtin.cameras for m in found)
    with pytest.raises(BadInputError, match="no camera.*'Z9'"):
        match_pairs(builtin, v3_pairs, "train", cameras=["Z9"], progress=False)


def test_scoring_in_chunks_gives_the_likelihood_of_one_pass(builtin, v3_pairs):
    import torch

    from nmflowgan.data.folders import find_pairs
    from nmflowgan.data.patches import PatchDataset
    from nmflowgan.matching import SCORED_CHUNK, grouped_patches, mean_nll

    dataset = PatchDataset(find_pairs(v3_pairs, "train"), patch_px=48, stride_px=24)
    batch = grouped_patches(dataset, lambda record: record.camera, SCORED_CHUNK + 5)["V3"]
    assert len(batch.clean) == SCORED_CHUNK + 5  # two passes, the second one short
    uniform = torch.rand(batch.noisy.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = builtin.encode("V3", batch.isos.tolist(), len(batch.clean))
        noise = batch.noisy.float() - batch.clean.float()
        _, log_prob = builtin.flow.latent_and_log_prob(noise, batch.clean.float() / 255, cond, uniform=uniform,
                                                       censored=True)
    one_pass = -float(log_prob.mean()) / noise[0].numel()
    assert mean_nll(builtin, batch, "V3", batch.isos.tolist(), uniform) == pytest.approx(one_pass, rel=1e-5)
    few = [0, 3, 7]
    assert mean_nll(builtin, batch.subset(few), "V3", batch.isos[few].tolist(), uniform[few]) == pytest.approx(
        -float(log_prob[few].mean()) / noise[0].numel(), rel=1e-5)


def test_the_nearest_camera_is_the_best_finalist_of_the_screening():
    from nmflowgan.models.adaptation import nearest_cameras

    screened = {"A0": 1.0, "A1": 2.0, "A2": 3.0, "A3": 4.0}  # NLL on a few patches
    full = {"A0": 2.5, "A1": 2.0, "A2": 2.2, "A3": 0.1}  # on all of them: A3 is best, but screened out
    calls = []

    def score(new, base, screen):
        calls.append((base, screen))
        return (screened if screen else full)[base]
    assert nearest_cameras(score, list(screened), ["NEW"], finalists=3) == {"NEW": "A1"}
    assert sorted(base for base, screen in calls if not screen) == ["A0", "A1", "A2"]
    assert nearest_cameras(score, list(screened), ["NEW"], finalists=4) == {"NEW": "A3"}
