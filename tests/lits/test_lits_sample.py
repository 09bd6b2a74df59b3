"""``lits sample`` carries a tumour a patch model learns in the demo's budget: every volume holds
lesions, on average over a tenth of the liver, well apart in HU from the liver and from the body
(the earlier sample: ~43 voxels a volume, 3% of the liver, 1.5 noise sd from the body — demo
tumour Dice 0.01)."""

from __future__ import annotations

import numpy as np
import pytest

from medchallenge.lits.sample import draw_case

NOISE_HU = 10.0


@pytest.mark.parametrize("seed", range(3))
def test_every_volume_has_a_learnable_tumour(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(8):  # the demo's 8 volumes, drawn as write_sample_dataset draws them
        hu, labels = draw_case(48, 8, rng)
        tumour, liver = labels == 2, labels == 1
        body = (labels == 0) & (hu > -500)
        assert tumour.sum() >= 40
        shares.append(tumour.sum() / (tumour.sum() + liver.sum()))
        for other in (liver, body):  # the tumour's mean HU lies > 5 noise sd from each neighbour's
            assert abs(hu[tumour].mean() - hu[other].mean()) > 5 * NOISE_HU
    assert np.mean(shares) > 0.1, shares
