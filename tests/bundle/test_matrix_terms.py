"""The log-det and CALC terms of the JCAS stage act on the noise transition matrices only.

With the matrices held at their warm-start estimate (``ntm_learn: false``), ``stage2#calc_weight`` and
``stage2#logdet_weight`` leave the trained network bitwise unchanged. With learned matrices (``ntm_learn:
true``: the bundle default, ``configs/ablation/calc.json`` and the paper preset) they move the matrices, and
through the corrected losses the network.
"""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, TINY, TRAIN, bundle_workflow

NOISE = str(REPO / "configs" / "noise" / "symmetric50.json")


def _train(tiny_dataset, out, learn: bool, term: str, weight: float) -> tuple[dict, torch.Tensor, torch.Tensor]:
    workflow = bundle_workflow(
        "training",
        [TRAIN, NOISE],
        dataset_dir=str(tiny_dataset),
        output_dir=str(out),
        ntm_learn=learn,
        **{**TINY, f"stage2#{term}": weight},
    )
    network, loss = workflow.parser.get_parsed_content("network"), workflow.parser.get_parsed_content("loss")
    assert loss.calc_weight == (weight if term == "calc_weight" else 0.01)  # the JCAS stage was entered
    return network.state_dict(), loss.t_c().detach(), loss.t_a().detach()


@pytest.mark.parametrize("term", ["calc_weight", "logdet_weight"])
@pytest.mark.parametrize("learn", [False, True])
def test_matrix_terms_change_the_model_only_through_learned_matrices(term, learn, tiny_dataset, tmp_path):
    (net_off, t_c_off, t_a_off), (net_on, t_c_on, t_a_on) = (
        _train(tiny_dataset, tmp_path / f"w{weight}", learn, term, weight) for weight in (0.0, 0.5)
    )
    same_network = all(torch.equal(net_off[key], net_on[key]) for key in net_off)
    if learn:
        assert not torch.equal(t_c_off, t_c_on) or not torch.equal(t_a_off, t_a_on)
        assert not same_network
    else:
        assert torch.equal(t_c_off, t_c_on) and torch.equal(t_a_off, t_a_on)
        assert same_network
