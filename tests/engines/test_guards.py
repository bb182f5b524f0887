"""NonFiniteLossGuard on a tiny MONAI trainer whose affinity features go NaN at a known iteration."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Average
from monai.engines import SupervisedTrainer
from torch import nn

from jcas_monai.engines import (
    BestModelSaver,
    JCASPrepareBatch,
    NonFiniteLossError,
    NonFiniteLossGuard,
    TrainingCheckpoint,
    selection_rule,
)
from jcas_monai.losses import JCASLoss

K, BAD_ITERATION = 3, 3  # two iterations per epoch: the NaN comes at the start of epoch 2


class TwoBranchNet(nn.Module):
    """1x1 convolutions giving the training outputs of a JCASNet on an 8 x 8 input and grid; ``poison``
    turns the main branch's affinity features into NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.ModuleDict({b: nn.Conv2d(3, K, 1) for b in ("main", "aux")})
        self.features = nn.ModuleDict({b: nn.Conv2d(3, 4, 1) for b in ("main", "aux")})
        self.poison = False

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for b in ("main", "aux"):
            out[f"{b}_logits"] = self.logits[b](x)
            out[f"{b}_features"] = self.features[b](x)
        if self.poison:
            out["main_features"] = out["main_features"] * float("nan")
        return out


def _data() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        label = torch.randint(0, K, (1, 8, 8), generator=g)
        affinity = (label == torch.arange(K)[:, None, None]).float()
        items.append({"image": torch.randn(3, 8, 8, generator=g), "label": label, "affinity": affinity})
    return items


def _trainer(tmp_path, skip: bool):
    torch.manual_seed(0)
    net = TwoBranchNet()
    loss = JCASLoss(K, seg_weights=(1.0, 0.1), aff_weights=(0.1, 1.0), use_dar=False)
    optimizer = torch.optim.SGD([*net.parameters(), *loss.parameters()], lr=0.1, momentum=0.9)
    guard = NonFiniteLossGuard(loss, optimizer, skip=skip)
    checkpoint = TrainingCheckpoint(tmp_path, {"network": net, "optimizer": optimizer}, resume=False)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=3,
        train_data_loader=torch.utils.data.DataLoader(_data(), batch_size=2),
        network=net,
        optimizer=optimizer,
        loss_function=loss,
        prepare_batch=JCASPrepareBatch(),
        key_train_metric={"neg_loss": Average(output_transform=lambda out: -out["loss"].item())},
        train_handlers=[checkpoint, guard],
        decollate=False,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, BestModelSaver(net, tmp_path))
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda e: setattr(net, "poison", e.state.iteration == BAD_ITERATION)
    )
    return trainer, net, guard


def test_nonfinite_loss_stops_naming_the_iteration_and_term_and_keeps_saved_files(tmp_path):
    trainer, _, _ = _trainer(tmp_path, skip=False)
    saved = {}
    trainer.add_event_handler(
        Events.ITERATION_STARTED(once=BAD_ITERATION),
        lambda e: saved.update({p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}),
    )
    with pytest.raises(
        NonFiniteLossError, match=rf"iteration {BAD_ITERATION} \(epoch 2\); bad term\(s\): aff_main\."
    ) as err:
        trainer.run()
    assert "skip_nonfinite" in str(err.value)
    # the good model and checkpoint of epoch 1 are still there, byte for byte, and nothing newer was written
    assert set(saved) == {"model.pt", "checkpoint_epoch=1.pt"}
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")} == saved
    assert not list(tmp_path.glob(".*.tmp"))


def test_skip_drops_the_bad_batch_without_touching_the_weights(tmp_path):
    trainer, net, guard = _trainer(tmp_path, skip=True)
    weights = {}

    def snapshot(key):
        return lambda engine: weights.update(
            {key(engine): {k: v.clone() for k, v in net.state_dict().items()}}
        )

    trainer.add_event_handler(Events.ITERATION_STARTED, snapshot(lambda e: e.state.iteration))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=BAD_ITERATION), snapshot(lambda e: "after_bad"))
    trainer.run()

    assert guard.skipped == 1 and trainer.state.epoch == 3
    before_bad = weights[BAD_ITERATION]
    assert all(torch.equal(before_bad[k], v) for k, v in weights["after_bad"].items())
    # every other iteration did update the weights, and the run ended finite
    assert not all(torch.equal(weights[BAD_ITERATION - 1][k], v) for k, v in before_bad.items())
    final = torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)["network"]
    assert all(torch.isfinite(v).all() for v in final.values())


@pytest.mark.parametrize("mode, expected", [("best", 0.8), ("last", 0.5)])
def test_model_selection_keeps_the_best_or_the_last_validated_weights(tmp_path, mode, expected):
    net = torch.nn.Linear(1, 1, bias=False)
    saver = BestModelSaver(net, tmp_path, mode=mode)
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "mean_dice"
    for score in (0.3, 0.8, float("nan"), 0.5):
        with torch.no_grad():
            net.weight.fill_(score)
        engine.state.metrics = {"mean_dice": score}
        saver(engine)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["weight"].item()
    assert saved == pytest.approx(expected) and saver.best == pytest.approx(0.8)


@pytest.mark.parametrize(
    "rule, items, expected",
    [
        ("auto", [{"label": "a", "clean_label": "a"}, {"label": "b", "clean_label": "c"}], "best"),
        ("auto", [{"label": "a", "clean_label": "a"}, {"label": "b"}], "last"),
        ("auto", [{"label": "a"}], "last"),
        ("auto", [], "last"),
        ("best", [{"label": "a"}], "best"),
        ("last", [{"label": "a", "clean_label": "a"}], "last"),
    ],
)
def test_auto_selection_keeps_the_best_epoch_only_on_clean_validation_labels(rule, items, expected, capsys):
    assert selection_rule(rule, items) == expected
    if rule == "auto":
        assert f"model_selection auto: {expected}" in capsys.readouterr().out


def test_unknown_selection_rule_names_the_config_key():
    with pytest.raises(ValueError, match="model_selection must be one of 'auto', 'best', 'last'; got 'first'"):
        selection_rule("first", [])
