"""The study runner: option checks, cell commands, reports, and a tiny grid end to end through the bundle."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import TINY

from jcas_monai.reproduce import Study, StudyError, read_scalar, write_reports
from jcas_monai.reproduce.__main__ import main


def _cells(text: str) -> dict[str, list[str]]:
    """Markdown table rows of ``results.md`` by method name."""
    rows = [
        line.strip("|").split("|")
        for line in text.splitlines()
        if line.startswith("| ") and "Method" not in line
    ]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


# ---------------------------------------------------------------- options and commands, no training


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"noises": ["gaussian"], "variants": ["jcas"]},
            "unknown noise kind 'gaussian'; allowed: asymmetric50, clean",
        ),
        (
            {"noises": ["ellipse"], "variants": ["jcas", "crf"]},
            "unknown variant 'crf'; allowed: affinity, baseline",
        ),
        (
            {"noises": ["ellipse"], "variants": ["jcas"], "datalist": "missing.json"},
            "missing.json does not exist",
        ),
        ({"noises": ["ellipse"], "variants": ["jcas"], "overrides": {"max_epochs": "3"}}, "use --epochs"),
        (
            {"noises": ["ellipse"], "variants": ["jcas"], "preset": "fast"},
            "unknown preset 'fast'; allowed: paper",
        ),
    ],
)
def test_invalid_options_name_the_allowed_values(tmp_path, options, message):
    if "datalist" in options:
        options["datalist"] = tmp_path / options["datalist"]
    with pytest.raises(StudyError, match=re.escape(message)):
        Study(out=tmp_path, **options)


def test_cli_reports_invalid_options_on_stderr(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--noise", "ellipse", "--variants", "jcas,crf"]) == 2
    assert "unknown variant 'crf'" in capsys.readouterr().err


def test_grid_runs_the_upper_bound_once_and_gives_every_variant_the_same_budget(tmp_path):
    study = Study(
        out=tmp_path,
        noises=["ellipse", "symmetric50"],
        variants=["baseline", "jcas", "upper"],
        epochs=10,
        preset="paper",
    )
    assert [str(c) for c in study.cells()] == [
        "clean/upper",
        "ellipse/baseline",
        "ellipse/jcas",
        "symmetric50/baseline",
        "symmetric50/jcas",
    ]
    upper, baseline, jcas = study.cells()[0], study.cells()[1], study.cells()[2]
    # one-stage variants keep their own warmup_epochs (@max_epochs); the two-stage ones get half the budget
    assert (
        study.cell_overrides(jcas)["max_epochs"] == "10"
        and study.cell_overrides(jcas)["warmup_epochs"] == "5"
    )
    assert "warmup_epochs" not in study.cell_overrides(baseline)
    assert study.cell_overrides(upper)["output_dir"] == str(tmp_path.resolve() / "clean" / "upper")
    # the preset comes before the noise and ablation overlays, evaluate.json last
    names = [Path(f).relative_to(study.repo).as_posix() for f in study.config_files(jcas, evaluate=True)]
    assert names == [
        "bundle/configs/train.json",
        "configs/paper.json",
        "configs/noise/ellipse.json",
        "configs/ablation/jcas.json",
        "bundle/configs/evaluate.json",
    ]
    command = study.command(jcas)
    assert command[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert json.loads(command[command.index("--config_file") + 1]) == study.config_files(jcas)


# ---------------------------------------------------------------- reports from finished cells


def _fake_cell(
    out: Path, noise: str, variant: str, scores: dict[str, tuple[float, float]], curve: list[float]
):
    from torch.utils.tensorboard import SummaryWriter

    folder = out / noise / variant
    (folder / "ntm").mkdir(parents=True)
    (folder / "ntm" / "ntm.png").write_bytes(b"png")
    per_class = {name: {"dice": d, "jac": j} for name, (d, j) in scores.items()}
    metrics = {
        "mean_dice": sum(d for d, _ in scores.values()) / len(scores),
        "mean_jac": sum(j for _, j in scores.values()) / len(scores),
        "per_class": per_class,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "reproduce.json").write_text(json.dumps({"epochs": 4, "seconds": 12.5}))
    with SummaryWriter(str(folder / "logs")) as writer:
        for epoch, value in enumerate(curve, 1):
            writer.add_scalar("mean_jac", value, epoch)


def test_reports_use_the_paper_layout_with_the_best_method_in_bold(tmp_path):
    scores = {
        "upper": {"shaft": (0.9, 0.8), "wrist": (0.7, 0.6)},
        "baseline": {"shaft": (0.8, 0.7), "wrist": (0.5, 0.4)},
        "jcas": {"shaft": (0.85, 0.75), "wrist": (0.61234, 0.45)},
    }
    for variant, s in scores.items():
        _fake_cell(tmp_path, "clean" if variant == "upper" else "ellipse", variant, s, [0.1, 0.2, 0.3])
    written = write_reports(tmp_path, {"upper"})
    assert {p.name for p in written} >= {"results.csv", "results.md", "jac_vs_epoch_ellipse.png"}
    assert (tmp_path / "matrices" / "ellipse_jcas.png").is_file() and (
        tmp_path / "matrices" / "clean_upper.png"
    ).is_file()

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["noise"], r["variant"]) for r in rows] == [
        ("clean", "upper"),
        ("ellipse", "baseline"),
        ("ellipse", "jcas"),
    ]
    assert rows[2]["dice_wrist"] == "61.234" and rows[2]["mean_jac"] == "60.000" and rows[2]["epochs"] == "4"

    table = _cells((tmp_path / "results.md").read_text())
    assert list(table) == ["Upper bound", "Baseline", "Ours (JCAS)"]
    assert table["Upper bound"][0] == "90.000"  # a reference, never bold
    assert table["Baseline"][0] == "80.000" and table["Ours (JCAS)"][0] == "**85.000**"
    assert table["Ours (JCAS)"][2] == "**61.234**"


def test_curves_merge_resumed_event_files_newest_last(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    logs = tmp_path / "logs"
    logs.mkdir()
    # a run interrupted after epoch 2 (its epoch-2 value never checkpointed), then resumed from epoch 1
    for stamp, points in ((1000, {1: 0.1, 2: 0.2}), (2000, {2: 0.25, 3: 0.3})):
        with SummaryWriter(str(tmp_path / str(stamp))) as writer:
            for step, value in points.items():
                writer.add_scalar("mean_jac", value, step)
        (event,) = (tmp_path / str(stamp)).glob("events.*")
        event.rename(logs / f"events.out.tfevents.{stamp}.host.1.0")
    assert [(s, round(v, 3)) for s, v in read_scalar(logs)] == [(1, 0.1), (2, 0.25), (3, 0.3)]


# ---------------------------------------------------------------- a tiny grid end to end


def test_tiny_grid_end_to_end_and_resume(tiny_dataset, tmp_path, capsys):
    tiny = {k: v for k, v in TINY.items() if k not in ("max_epochs", "warmup_epochs")}
    args = [
        "--datalist",
        str(tiny_dataset / "datalist.json"),
        "--noise",
        "ellipse",
        "--variants",
        "jcas,upper",
        "--out",
        str(tmp_path),
        "--epochs",
        "2",
        "--override",
        *[f"{k}={json.dumps(v)}" for k, v in tiny.items()],
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[1/2] clean/upper: training (epochs 2) ... mean Dice" in out
    assert "[2/2] ellipse/jcas: training (epochs 2) ... mean Dice" in out
    assert "Epoch" not in out  # the bundle's output goes to the cell logs
    assert "JCAS stage starts" in (tmp_path / "ellipse" / "jcas" / "train.log").read_text()

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["noise"], r["variant"]) for r in rows] == [("clean", "upper"), ("ellipse", "jcas")]
    assert list(rows[0]) == [
        "noise", "variant", "dice_shaft", "jac_shaft", "dice_wrist", "jac_wrist", "dice_clasper", "jac_clasper",
        "mean_dice", "mean_jac", "epochs", "seconds",
    ]  # fmt: skip
    table = _cells((tmp_path / "results.md").read_text())
    assert list(table) == ["Upper bound", "Ours (JCAS)"]
    for row, method in zip(rows, table, strict=True):
        csv_values = [row[k] for k in list(row)[2:10]]
        assert all(re.fullmatch(r"\d+\.\d{3}", v) for v in csv_values)
        assert [v.strip("*") for v in table[method]] == csv_values
    metrics = json.loads((tmp_path / "ellipse" / "jcas" / "metrics.json").read_text())
    assert rows[1]["mean_jac"] == f"{100 * metrics['mean_jac']:.3f}" and rows[1]["epochs"] == "2"
    assert (tmp_path / "jac_vs_epoch_ellipse.png").stat().st_size > 0
    assert (tmp_path / "matrices" / "ellipse_jcas.png").is_file()

    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count("skipped (finished)") == 2 and "training" not in again
