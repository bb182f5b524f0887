import math

import pytest
import torch

from jcas_monai.engines import ProtocolMetric, protocol_scores

# Two 2 x 4 images, K = 4; 255 = ignore. Expected values counted by hand below.
LABEL_1 = [[1, 1, 2, 0], [3, 3, 0, 255]]
PRED_1 = [[1, 0, 2, 2], [3, 0, 0, 1]]
LABEL_2 = [[0, 0, 0, 0], [1, 1, 1, 1]]  # no wrist (2), no clasper (3)
PRED_2 = [[2, 0, 0, 0], [1, 1, 1, 0]]  # a false wrist pixel that must not count


def _t(x):
    return torch.tensor([[x]])


def test_protocol_scores_hand_counted():
    s = protocol_scores(torch.cat([_t(PRED_1), _t(PRED_2)]), torch.cat([_t(LABEL_1), _t(LABEL_2)]), 4)
    # image 1: class 1 |G|=2, |P|=1 (the ignore pixel predicted 1 is excluded), TP=1
    assert s["dice"][0].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert s["jac"][0].tolist() == pytest.approx([1 / 2, 1 / 2, 1 / 2])
    # image 2: class 1 |G|=4, |P|=3, TP=3; classes 2 and 3 absent from the ground truth -> NaN
    assert s["dice"][1, 0].item() == pytest.approx(6 / 7)
    assert s["jac"][1, 0].item() == pytest.approx(3 / 4)
    assert math.isnan(s["dice"][1, 1].item()) and math.isnan(s["jac"][1, 2].item())


def test_protocol_metric_skips_images_without_the_class():
    dice = ProtocolMetric(4, "dice")
    jac_wrist = ProtocolMetric(4, "jac", class_index=2)
    for metric in (dice, jac_wrist):
        metric([_t(PRED_1)[0]], [_t(LABEL_1)[0]])  # list input, as from a decollated engine output
        metric(_t(PRED_2), _t(LABEL_2))
    shaft = (2 / 3 + 6 / 7) / 2
    assert dice.per_class().tolist() == pytest.approx([shaft, 2 / 3, 2 / 3])
    assert dice.aggregate().item() == pytest.approx((shaft + 2 / 3 + 2 / 3) / 3)
    # wrist averaged over image 1 only: image 2 has no wrist, its false positive is not scored
    assert jac_wrist.aggregate().item() == pytest.approx(1 / 2)


def test_protocol_metric_argument_checks():
    with pytest.raises(ValueError, match="metric"):
        ProtocolMetric(4, "iou")
    with pytest.raises(ValueError, match="class_index"):
        ProtocolMetric(4, class_index=0)
