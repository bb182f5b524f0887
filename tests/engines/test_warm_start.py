"""Warm start of the matrices from the warm-up model, and the matrices' own optimiser step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.engines import IterationEvents

from jcas_monai.engines import MatrixOptimizerStep, estimate_ntms, given_matrix
from jcas_monai.losses import NoiseTransitionMatrix, empirical_affinity_ntm, empirical_class_ntm

K = 3


class _Oracle(torch.nn.Module):
    """Returns fixed log-probabilities stored in the "image" (the image is the prediction)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, K, size=(2, 3, 8, 12))
    noisy = np.where(rng.random(pred.shape) < 0.3, rng.integers(0, K, size=pred.shape), pred)
    noisy[0, 0, 0, :4] = 255
    batches = []
    for p, y in zip(pred, noisy):
        logp = torch.log_softmax(
            5.0 * torch.nn.functional.one_hot(torch.as_tensor(p), K).movedim(-1, 1).float(), 1
        )
        batches.append({"image": logp, "label": torch.as_tensor(y)[:, None]})
    return pred.reshape(-1, 8, 12), noisy.reshape(-1, 8, 12), batches


def test_confusion_estimate_counts_predictions_against_noisy_labels():
    pred, noisy, batches = _batches()
    estimates = estimate_ntms(_Oracle(), batches, K)
    np.testing.assert_allclose(estimates["confusion"]["T_C"], empirical_class_ntm(pred, noisy, K), atol=1e-12)
    np.testing.assert_allclose(
        estimates["confusion"]["T_A"], empirical_affinity_ntm(pred, noisy, K), atol=1e-12
    )


def test_anchor_estimate_is_the_posterior_at_the_most_confident_pixels():
    prob = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.3, 0.2]])
    image = prob[3].reshape(1, K, 1, 1).repeat(1, 1, 8, 16)
    image[0, :, 0, 0:12:4] = prob[:3].T  # pixels on the anchor grid (every 4th row and column)
    batch = {"image": image.log(), "label": torch.zeros(1, 1, 8, 16)}
    estimates = estimate_ntms(_Oracle(), [batch], K, quantile=1.0)
    np.testing.assert_allclose(estimates["anchor"]["T_C"], prob[:3].double(), atol=1e-6)


def test_interior_estimate_leaves_out_the_borders_between_predicted_classes():
    # predicted class 0 in columns 0-5, class 1 in 6-15; the labels call columns 4-5 class 1, as a model
    # that draws the border two pixels off would see. The estimates read every 4th row and column.
    pred = torch.zeros(16, 16, dtype=torch.long)
    pred[:, 6:] = 1
    label = pred.clone()
    label[:, 4:6] = 1
    logp = torch.log_softmax(5.0 * torch.nn.functional.one_hot(pred, K).movedim(-1, 0).float(), 0)
    batch = {"image": logp[None], "label": label[None, None]}
    estimates = estimate_ntms(_Oracle(), [batch], K, min_pixels=1)  # rows from 8 pixels count here
    # sampled columns 0 and 4 are predicted 0 and labelled 0 and 1; column 4 lies within 2 of the border
    np.testing.assert_allclose(estimates["confident"]["T_C"][0], [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        estimates["interior"]["T_C"][:2], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], atol=1e-12
    )


def _rare_classes_batch() -> dict[str, torch.Tensor]:
    """A model that predicts class 0 over a 32 x 32 image (labelled 0 or 1 by halves) except for two anchor
    grid pixels, one predicted 1 and one predicted 2, both labelled 2: as a warm-up model that has
    hardly begun to predict the rare classes."""
    pred = torch.zeros(32, 32, dtype=torch.long)
    pred[0, 0], pred[0, 4] = 1, 2
    label = torch.zeros(32, 32, dtype=torch.long)
    label[:, 16:] = 1
    label[0, 0] = label[0, 4] = 2
    logp = torch.log_softmax(5.0 * torch.nn.functional.one_hot(pred, K).movedim(-1, 0).float(), 0)
    return {"image": logp[None], "label": label[None, None]}


def test_rows_from_too_few_pixels_keep_the_start_row():
    start = NoiseTransitionMatrix(K).default_matrix().double()
    counted = estimate_ntms(_Oracle(), [_rare_classes_batch()], K, min_pixels=1)
    estimates = estimate_ntms(_Oracle(), [_rare_classes_batch()], K, start_t_c=start, min_pixels=2)
    for method in ("confusion", "confident"):
        # counted, rows 1 and 2 are both the unit row of label 2: a singular matrix
        assert torch.linalg.matrix_rank(counted[method]["T_C"]) < K
        np.testing.assert_allclose(counted[method]["T_C"][1:, 2], [1.0, 1.0])
        # with two pixels needed, they keep the start rows; row 0 (class 0, labelled 0 or 1) stays counted
        torch.testing.assert_close(estimates[method]["T_C"][1:], start[1:])
        torch.testing.assert_close(estimates[method]["T_C"][0], counted[method]["T_C"][0])
        assert torch.linalg.matrix_rank(estimates[method]["T_C"]) == K
    assert estimates["confusion"]["pixels"].tolist() == [32 * 32 - 2, 1, 1]
    # the 62 other anchor grid pixels, equally confident, so all at or above their median confidence
    assert estimates["confident"]["pixels"].tolist() == [62, 1, 1]
    np.testing.assert_allclose(estimates["confusion"]["T_C"][0], [0.5, 0.5, 0.0], atol=2e-3)


def test_stage_switch_starts_from_the_default_matrix_when_the_estimate_is_singular(tmp_path):
    from jcas_monai.losses import JCASLoss

    # label 1 where class 1 is predicted and where class 2 is: rows 1 and 2 of the estimate are equal
    pred = torch.zeros(8, 256, dtype=torch.long)
    pred[:, 100:150], pred[:, 150:200] = 1, 2
    label = torch.where(pred == 2, 1, pred)
    logp = torch.log_softmax(5.0 * torch.nn.functional.one_hot(pred, K).movedim(-1, 0).float(), 0)
    loss = JCASLoss(K, class_freq=[0.4, 0.3, 0.3])
    batches = [{"image": logp[None], "label": label[None, None]}]
    assert torch.linalg.matrix_rank(estimate_ntms(_Oracle(), batches, K)["confusion"]["T_C"]) < K
    _switch_stage(loss, _Network(), tmp_path, batches, warm_start="confusion")
    torch.testing.assert_close(loss.t_c(), loss.t_c.default_matrix(), atol=1e-6, rtol=0)
    assert torch.isfinite(torch.linalg.slogdet(loss.t_c()).logabsdet)


def test_a_singular_band_alone_starts_from_the_default_matrix(tmp_path):
    from jcas_monai.losses import JCASLoss

    # labels: 1 in columns 100-199, 2 in 200-203; predictions: 1 in 100-149, 2 in 150-203. Away from the
    # label's borders (band 1, radius 2) predicted 1 and predicted 2 are both labelled 1: a singular band.
    # Near them (band 0) predicted 2 is also labelled 2.
    pred, label = torch.zeros(8, 256, dtype=torch.long), torch.zeros(8, 256, dtype=torch.long)
    pred[:, 100:150], pred[:, 150:204] = 1, 2
    label[:, 100:200], label[:, 200:204] = 1, 2
    logp = torch.log_softmax(5.0 * torch.nn.functional.one_hot(pred, K).movedim(-1, 0).float(), 0)
    loss = JCASLoss(K, class_freq=[0.4, 0.3, 0.3], border_radii=(2,))
    batches = [{"image": logp[None], "label": label[None, None]}]
    estimate = estimate_ntms(_Oracle(), batches, K, border_radii=(2,))["confusion"]["T_C"]
    assert torch.linalg.matrix_rank(estimate[1]) < K and torch.linalg.matrix_rank(estimate[0]) == K
    _switch_stage(loss, _Network(), tmp_path, batches, warm_start="confusion")
    torch.testing.assert_close(loss.t_c()[1], loss.t_c.default_matrix(), atol=1e-6, rtol=0)
    torch.testing.assert_close(loss.t_c()[0], estimate[0].float(), atol=1e-5, rtol=0)


def test_a_fixed_singular_matrix_adds_no_log_det():
    from jcas_monai.losses import JCASLoss

    singular = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    loss = JCASLoss(
        K,
        class_freq=[0.4, 0.3, 0.3],
        fixed_t_c=singular,
        aff_weights=(0, 0),
        use_dar=False,
        class_correction=True,
        logdet_weight=0.5,
        seg_weights=(1, 0),
    )
    value = loss({"main_logits": torch.randn(1, K, 4, 4)}, torch.randint(0, K, (1, 1, 4, 4)))
    assert torch.isfinite(value)
    learned_t_a = torch.linalg.slogdet(loss.t_a()).logabsdet
    assert loss.last_terms["logdet"] == pytest.approx(float(learned_t_a))


@pytest.mark.parametrize("selection", ["best", "last"])
def test_stage_switch_starts_from_the_best_or_the_last_warm_up_weights(tmp_path, selection):
    from jcas_monai.losses import JCASLoss

    network = _Network()
    torch.save({"unused": torch.ones(1)}, tmp_path / "warmup_model.pt")  # the best epoch's weights
    with torch.no_grad():
        network.unused.fill_(5.0)  # the last epoch's weights
    _switch_stage(JCASLoss(K), network, tmp_path, [], warmup_selection=selection)
    assert network.unused.item() == (1.0 if selection == "best" else 5.0)


def test_given_matrix_empirical_counts_the_clean_training_labels():
    clean = np.array([[[0, 0, 1, 2]]])
    noisy = np.array([[[0, 1, 1, 2]]])
    dataset = [{"label": noisy, "clean_label": clean}, {"label": noisy}]
    np.testing.assert_allclose(
        given_matrix("empirical", "T_C", K, dataset), empirical_class_ntm(clean, noisy, K)
    )
    np.testing.assert_allclose(
        given_matrix("empirical", "T_A", K, dataset), empirical_affinity_ntm(clean, noisy, K)
    )
    with pytest.raises(ValueError, match="fixed_t_c: 'empirical' needs training items that carry"):
        given_matrix("empirical", "T_C", K, [{"label": noisy}])


class _Engine:
    def __init__(self, scale: float | None = None) -> None:
        self.amp = scale is not None
        self.scaler = None
        if scale is not None:
            self.scaler = torch.amp.GradScaler("cpu", init_scale=scale)


@pytest.mark.parametrize("scale", [None, 1024.0])
def test_matrix_optimizer_step_unscales_steps_and_clears(scale):
    ntm = NoiseTransitionMatrix(2)
    optimizer = torch.optim.SGD(ntm.parameters(), lr=0.5)
    step = MatrixOptimizerStep(optimizer)
    before = ntm.weight.detach().clone()
    (ntm()[0, 1] * (scale or 1.0)).backward()
    expected_grad = ntm.weight.grad / (scale or 1.0)
    step(_Engine(scale))
    torch.testing.assert_close(ntm.weight.detach(), before - 0.5 * expected_grad)
    assert ntm.weight.grad is None


def test_matrix_optimizer_step_skips_non_finite_gradients_and_attaches_after_backward():
    ntm = NoiseTransitionMatrix(2)
    step = MatrixOptimizerStep(torch.optim.SGD(ntm.parameters(), lr=0.5))
    before = ntm.weight.detach().clone()
    ntm.weight.grad = torch.full_like(ntm.weight, float("nan"))
    step(_Engine())
    torch.testing.assert_close(ntm.weight.detach(), before)

    class _Attach:
        def __init__(self):
            self.events = []

        def add_event_handler(self, event, handler):
            self.events.append(event)

    engine = _Attach()
    step.attach(engine)
    assert engine.events == [IterationEvents.BACKWARD_COMPLETED]


class _Network(_Oracle):
    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))


def _switch_stage(loss, network, save_dir, batches, **kwargs):
    """Build :class:`JCASStages` (two warm-up epochs, class correction after) and start epoch 3 on
    ``batches``; returns the stages."""
    from types import SimpleNamespace

    from ignite.engine import Engine

    from jcas_monai.engines import JCASStages

    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    stages = JCASStages(
        loss, network, optimizer, Engine(lambda e, b: None), 2, {"class_correction": True}, save_dir, **kwargs
    )
    stages.epoch_started(SimpleNamespace(state=SimpleNamespace(epoch=3, dataloader=batches)))
    return stages


@pytest.mark.parametrize("learn", [False, True])
def test_stage_switch_warm_starts_and_holds_or_learns_the_matrices(tmp_path, learn):
    from jcas_monai.losses import JCASLoss

    pred, noisy, batches = _batches(1)
    loss = JCASLoss(K, class_freq=[0.4, 0.3, 0.3])
    ntm_optimizer = torch.optim.Adam(loss.parameters(), lr=0.05)
    options = {"matrix_optimizer": ntm_optimizer, "warm_start": "confusion", "learn_matrices": learn}
    stages = _switch_stage(loss, _Network(), tmp_path, batches, **options)
    expected = empirical_class_ntm(pred, noisy, K).float()
    torch.testing.assert_close(loss.t_c(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss.t_c.initial, expected, atol=1e-5, rtol=0)
    assert loss.class_correction and stages.stage == 2
    assert loss.t_c.weight.requires_grad is learn and loss.t_a.weight.requires_grad is learn
