"""Growing a model by new cameras: only the layers that read the condition through ConditionInput or
ConditionPlanes grow, each new camera's column a copy of its source camera's, and anything else is refused."""

import pytest
import torch
from torch import nn

from nmflowgan.condition_input import CameraGrid, ConditionInput, ConditionPlanes, condition_channels, grow_cameras
from nmflowgan.conditions import ConditionSpace, grid_positions
from nmflowgan.errors import BadInputError
from nmflowgan.models.noise_model import NoiseModel


class _Reader(nn.Module):
    """A network that reads the features through both condition layers (and one unrelated layer)."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.embed = ConditionInput(feature_dim, 4)
        self.planes = ConditionPlanes(2, feature_dim, 3, 3, padding=1)
        self.other = nn.Linear(4, 2)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = self.planes(torch.cat([image, condition_channels(features, image)], 1))
        return x.mean((2, 3)) + self.other(self.embed(features)).sum(1, keepdim=True)


def test_a_grown_camera_reads_exactly_what_its_source_read_and_the_base_cameras_are_unchanged():
    base_space, grown_space = ConditionSpace(("A", "B"), (100, 800)), ConditionSpace(("A", "B", "C", "D"), (100, 800))
    torch.manual_seed(0)
    base, grown = _Reader(base_space.feature_dim), _Reader(grown_space.feature_dim)
    columns = grow_cameras(base, grown, 2, [1, 0])  # C starts as B, D as A
    assert columns == {"embed.weight": slice(2, 4), "planes.weight": slice(4, 6)}  # planes: 2 image channels first
    image = torch.rand(1, 2, 5, 5)
    for new, source in (("C", "B"), ("D", "A"), ("A", "A"), ("B", "B")):
        for iso in (100, 300, 800):
            ours = grown(image, grown_space.encode(new, iso, 1).features)
            theirs = base(image, base_space.encode(source, iso, 1).features)
            torch.testing.assert_close(ours, theirs)


def test_a_layer_that_reads_the_features_another_way_is_refused():
    class Bare(nn.Module):
        def __init__(self, feature_dim: int) -> None:
            super().__init__()
            self.reads = nn.Linear(feature_dim, 4)  # reads the camera, but not through ConditionInput

    with pytest.raises(BadInputError, match=r"cannot grow reads.weight from \(4, 3\) to \(4, 4\)"):
        grow_cameras(Bare(3), Bare(4), 2, [0])
    # a one-hot ISO model reads the camera through tables per (camera, ISO) cell: it cannot grow either
    onehot = NoiseModel.from_preset("paper", cameras=("A",), isos=(100, 800))
    bigger = NoiseModel.from_preset("paper", cameras=("A", "B"), isos=(100, 800))
    with pytest.raises(BadInputError, match="cannot grow .*log_scale"):
        grow_cameras(onehot, bigger, 1, [0])


def test_a_camera_grid_adds_each_cameras_own_value_at_each_grid_position_and_grows_by_zero_columns():
    """``CameraGrid``: camera c at a pixel of grid phase (r, q) gets ``table[channel, (r, q), c]``; a grown model's
    tables keep the base's columns and start the new cameras' at zero (where the base had none, all zero)."""
    space = ConditionSpace(("A", "B"), (100, 800))
    grid = CameraGrid(3, 2, 2)
    with torch.no_grad():
        grid.table.copy_(torch.arange(24, dtype=torch.float32).view(12, 2))  # row: channel * 4 + phase
    positions = grid_positions(2, 3, 4, top=1)  # rows 1..3: phases (1, q), (0, q), (1, q)
    out = grid(positions, space.encode(["A", "B"], [100, 800], 2).features)
    assert out.shape == (2, 3, 3, 4)
    for b, camera in enumerate((0, 1)):
        for y in range(3):
            for x in range(4):
                phase = ((1 + y) % 2) * 2 + x % 2
                assert torch.equal(out[b, :, y, x], grid.table[[c * 4 + phase for c in range(3)], camera])

    class _Gridded(nn.Module):
        def __init__(self, cameras: int) -> None:
            super().__init__()
            self.camera_grid = CameraGrid(3, cameras, 2)

    base, grown = _Gridded(2), _Gridded(3)
    with torch.no_grad():
        base.camera_grid.table.normal_()
    assert grow_cameras(base, grown, 2, [1]) == {"camera_grid.table": slice(2, 3)}
    assert torch.equal(grown.camera_grid.table[:, :2], base.camera_grid.table)
    assert torch.equal(grown.camera_grid.table[:, 2], base.camera_grid.table[:, 1])  # the source's values, copied
    assert grow_cameras(nn.Module(), _Gridded(3), 2, [1]) == {"camera_grid.table": slice(2, 3)}
