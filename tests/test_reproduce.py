"""The study runner: option checks, cell commands, statistics over seeds, reports, and a tiny two-seed grid
end to end through the bundle."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path

import pytest
from conftest import REPO, TINY

from jcas_monai.reproduce import (
    Study,
    StudyError,
    migrate_single_seed_cells,
    read_scalar,
    summarize,
    write_reports,
)
from jcas_monai.reproduce.__main__ import main


def _cells(text: str, table: int = 0) -> dict[str, list[str]]:
    """Rows by method name of the ``table``-th markdown table of ``results.md`` (0: the first scores table,
    1: the paired differences below it)."""
    tables: list[list[list[str]]] = []
    for line in text.splitlines():
        if line.startswith("| Method"):
            tables.append([])
        elif line.startswith("| ") and tables:
            tables[-1].append([c.strip() for c in line.strip("|").split("|")])
    return {cells[0]: cells[1:] for cells in tables[table]}


# ---------------------------------------------------------------- options and commands, no training


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"noises": ["gaussian"], "variants": ["jcas"]},
            "unknown noise kind 'gaussian'; allowed: affine, asymmetric50, clean",
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
        ({"noises": ["ellipse"], "variants": ["jcas"], "seeds": []}, "--seeds must be one or more"),
        (
            {"noises": ["ellipse"], "variants": ["jcas"], "seeds": [0, -1]},
            "non-negative integers, got [0, -1]",
        ),
        ({"noises": ["ellipse"], "variants": ["jcas"], "overrides": {"seed": "3"}}, "use --seeds"),
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
    for bad in (["--seeds", "0,one"], ["--seeds", "0,1", "--seed", "2"]):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path), *bad])
    assert "expected comma-separated integers" in capsys.readouterr().err


def test_grid_runs_the_upper_bound_once_per_seed_and_gives_every_variant_the_same_budget(tmp_path):
    study = Study(
        out=tmp_path,
        noises=["ellipse", "symmetric50"],
        variants=["baseline", "jcas", "upper"],
        epochs=10,
        preset="paper",
        seeds=[0, 1],
    )
    per_seed = ["clean/upper", "ellipse/baseline", "ellipse/jcas", "symmetric50/baseline", "symmetric50/jcas"]
    assert [str(c) for c in study.cells()] == [f"{c}/seed{k}" for k in (0, 1) for c in per_seed]
    upper, baseline, jcas = study.cells()[0], study.cells()[1], study.cells()[2]
    assert study.cell_overrides(study.cells()[7])["seed"] == "1" and study.cell_overrides(jcas)["seed"] == "0"
    # one-stage variants keep their own warmup_epochs (@max_epochs); the two-stage ones get half the budget
    assert (
        study.cell_overrides(jcas)["max_epochs"] == "10"
        and study.cell_overrides(jcas)["warmup_epochs"] == "5"
    )
    assert "warmup_epochs" not in study.cell_overrides(baseline)
    assert study.cell_overrides(upper)["output_dir"] == str(tmp_path.resolve() / "clean" / "upper" / "seed0")
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


def test_variants_are_looked_up_in_ablation_then_peers(tmp_path):
    repo = tmp_path / "repo"
    (repo / "configs" / "peers").mkdir(parents=True)
    (repo / "bundle").symlink_to(REPO / "bundle")
    for folder in ("noise", "ablation"):
        (repo / "configs" / folder).symlink_to(REPO / "configs" / folder)
    (repo / "configs" / "peers" / "coteaching.json").write_text(json.dumps({"max_epochs": 3}))
    (repo / "configs" / "peers" / "jcas.json").write_text("{}")  # the ablation overlay of that name wins
    study = Study(out=tmp_path / "out", noises=["ellipse"], variants=["jcas", "coteaching"], repo=repo)
    files = [Path(study.config_files(cell)[-1]).relative_to(repo).as_posix() for cell in study.cells()]
    assert files == ["configs/ablation/jcas.json", "configs/peers/coteaching.json"]
    with pytest.raises(
        StudyError,
        match=r"allowed: affinity, baseline, calc, coteaching, .*configs/ablation or .*configs/peers\)",
    ):
        Study(out=tmp_path / "out", noises=["ellipse"], variants=["mentor"], repo=repo)


def test_one_seed_cells_of_the_earlier_layout_move_into_their_seed_folder(tmp_path):
    old = tmp_path / "ellipse" / "jcas"
    (old / "models").mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    (old / "reproduce.json").write_text(
        json.dumps({"train_command": "python -m monai.bundle --seed 1 --x y"})
    )
    (tmp_path / "clean" / "upper" / "models").mkdir(parents=True)  # no record: seed 0, the default then
    (tmp_path / "ellipse" / "baseline" / "seed0").mkdir(parents=True)  # the new layout is left alone
    assert migrate_single_seed_cells(tmp_path) == [tmp_path / "clean" / "upper" / "seed0", old / "seed1"]
    assert sorted(p.name for p in old.iterdir()) == ["seed1"]
    assert sorted(p.name for p in (old / "seed1").iterdir()) == ["metrics.json", "models", "reproduce.json"]
    assert migrate_single_seed_cells(tmp_path) == []


# ---------------------------------------------------------------- statistics over seeds


def test_summary_against_hand_computed_values():
    s = summarize([1.0, 2.0, 3.0])  # sd 1; t(0.975, 2 dof) = 4.302653
    assert (s.mean, s.sd, s.n) == (2.0, 1.0, 3)
    assert s.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    assert s.interval == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    two = summarize([0.5, 1.5])  # sd sqrt(0.5); t(0.975, 1 dof) = 12.706205
    assert two.half_width == pytest.approx(12.706205 * math.sqrt(0.5) / math.sqrt(2), abs=1e-6)
    assert summarize([1.0, 2.0, 3.0], confidence=0.9).half_width == pytest.approx(2.919986 / math.sqrt(3))
    one = summarize([4.0])
    assert (one.mean, one.sd, one.half_width, one.interval) == (4.0, None, None, None)
    with pytest.raises(ValueError, match="at least one value"):
        summarize([])


# ---------------------------------------------------------------- reports from finished cells


def _fake_cell(
    out: Path,
    noise: str,
    variant: str,
    scores: dict[str, tuple[float, float]],
    curve: list[float],
    seed: int = 0,
):
    from torch.utils.tensorboard import SummaryWriter

    folder = out / noise / variant / f"seed{seed}"
    (folder / "ntm").mkdir(parents=True)
    (folder / "ntm" / "ntm.png").write_bytes(b"png")
    per_class = {name: {"dice": d, "jac": j} for name, (d, j) in scores.items()}
    metrics = {
        "mean_dice": sum(d for d, _ in scores.values()) / len(scores),
        "mean_jac": sum(j for _, j in scores.values()) / len(scores),
        "per_class": per_class,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "reproduce.json").write_text(json.dumps({"epochs": 4, "seconds": 12.5 + seed}))
    with SummaryWriter(str(folder / "logs")) as writer:
        for epoch, value in enumerate(curve, 1):
            writer.add_scalar("mean_jac", value, epoch)


def test_reports_give_mean_sd_over_seeds_and_paired_differences_in_the_paper_layout(tmp_path):
    # (shaft, wrist) Dice and Jac per seed; jcas - baseline in mean Dice: +4, +8, +6 points
    scores = {
        "upper": [{"shaft": (0.9, 0.8), "wrist": (0.7, 0.6)}, {"shaft": (0.92, 0.82), "wrist": (0.72, 0.6)}],
        "baseline": [
            {"shaft": (0.8, 0.7), "wrist": (0.5, 0.4)},
            {"shaft": (0.7, 0.6), "wrist": (0.5, 0.4)},
            {"shaft": (0.9, 0.8), "wrist": (0.5, 0.4)},
        ],
        "jcas": [
            {"shaft": (0.84, 0.74), "wrist": (0.54, 0.4)},
            {"shaft": (0.8, 0.7), "wrist": (0.56, 0.4)},
            {"shaft": (0.96, 0.8), "wrist": (0.56, 0.4)},
        ],
        "peer": [{"shaft": (0.1, 0.1), "wrist": (0.1, 0.1)}],  # a variant that is not an ablation name
    }
    for variant, per_seed in scores.items():
        for seed, s in enumerate(per_seed):
            _fake_cell(tmp_path, "clean" if variant == "upper" else "ellipse", variant, s, [0.1, 0.2], seed)
    written = write_reports(tmp_path, {"upper"})
    assert [p.name for p in written[:3]] == ["results.csv", "results.md", "results_seeds.csv"]
    assert (tmp_path / "jac_vs_epoch_ellipse.png").stat().st_size > 0
    assert (tmp_path / "matrices" / "ellipse_jcas_seed2.png").is_file()
    assert (tmp_path / "matrices" / "clean_upper_seed1.png").is_file()

    rows = {r["variant"]: r for r in csv.DictReader((tmp_path / "results.csv").open())}
    assert list(rows) == ["upper", "baseline", "jcas", "peer"]
    jcas, upper = rows["jcas"], rows["upper"]
    assert (jcas["table"], jcas["noise"], jcas["seeds"], jcas["seed_list"]) == (
        "ellipse",
        "ellipse",
        "3",
        "0 1 2",
    )
    assert (upper["table"], upper["noise"], upper["seeds"]) == ("ellipse", "clean", "2")
    mean_dice = [100 * (d + w) / 2 for (d, _), (w, _) in (s.values() for s in scores["jcas"])]
    assert jcas["mean_dice"] == f"{statistics.fmean(mean_dice):.3f}" == "71.000"
    assert jcas["mean_dice_sd"] == f"{statistics.stdev(mean_dice):.3f}"
    assert jcas["dice_shaft"] == "86.667" and jcas["dice_shaft_sd"] == f"{statistics.stdev([84, 80, 96]):.3f}"
    low, high = 6 - 4.302653 * 2 / math.sqrt(3), 6 + 4.302653 * 2 / math.sqrt(3)  # mean 6, sd 2, 2 dof
    assert (jcas["diff_mean_dice"], jcas["diff_mean_dice_sd"], jcas["diff_seeds"]) == ("6.000", "2.000", "3")
    assert (jcas["diff_mean_dice_ci_low"], jcas["diff_mean_dice_ci_high"]) == (f"{low:.3f}", f"{high:.3f}")
    assert jcas["diff_mean_jac"] == "2.333"  # shaft Jac differences 4, 10, 0 halved
    assert rows["baseline"]["diff_mean_dice"] == "" and rows["baseline"]["mean_dice_sd"] != ""
    assert upper["diff_seeds"] == "2"  # paired over the seeds both finished
    assert rows["peer"]["mean_dice_sd"] == "" and rows["peer"]["diff_mean_dice_ci_low"] == ""  # one seed
    assert rows["peer"]["diff_mean_dice"] == "-55.000" and rows["peer"]["diff_seeds"] == "1"
    per_seed = list(csv.DictReader((tmp_path / "results_seeds.csv").open()))
    assert len(per_seed) == 9 and per_seed[-2]["variant"] == "jcas" and per_seed[-2]["seed"] == "2"
    assert per_seed[-2]["dice_shaft"] == "96.000" and per_seed[-2]["seconds"] == "14.5"

    text = (tmp_path / "results.md").read_text()
    assert "Seeds: 0, 1, 2 (3 in all)." in text
    table = _cells(text)
    assert list(table)[:4] == ["Upper bound", "Baseline", "Ours (JCAS)", "peer"]
    assert table["Upper bound"][0] == "91.000 ± 1.414"  # a reference, never bold
    assert table["Ours (JCAS)"][0] == f"**86.667 ± {statistics.stdev([84, 80, 96]):.3f}**"
    assert table["Baseline"][0] == "80.000 ± 10.000" and table["peer"][0] == "10.000"
    assert table["Ours (JCAS)"][-1] == "3" and table["peer"][-1] == "1"  # seed counts
    paired = _cells(text, 1)
    assert list(paired) == ["Upper bound", "Ours (JCAS)", "peer"]
    jac = summarize([2.0, 5.0, 0.0])
    jac_interval = f"[{jac.interval[0]:+.3f}, {jac.interval[1]:+.3f}]"
    assert paired["Ours (JCAS)"] == ["+6.000", f"[{low:+.3f}, {high:+.3f}]", "+2.333", jac_interval, "3"]
    assert paired["peer"] == ["-55.000", "-", "-45.000", "-", "1"]


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


def test_tiny_two_seed_grid_end_to_end_and_resume(tiny_dataset, tmp_path, capsys):
    tiny = {k: v for k, v in TINY.items() if k not in ("max_epochs", "warmup_epochs")}
    common = ["--datalist", str(tiny_dataset / "datalist.json"), "--noise", "ellipse", "--out", str(tmp_path)]
    common += ["--epochs", "2", "--override", *[f"{k}={json.dumps(v)}" for k, v in tiny.items()]]
    args = [*common, "--variants", "baseline,jcas", "--seeds", "0,1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "4 cells (ellipse/baseline/seed0, ellipse/jcas/seed0, ellipse/baseline/seed1, ellipse/jcas/seed1)"
        in out
    )
    assert "[1/4] ellipse/baseline/seed0: training (epochs 2) ... mean Dice" in out
    assert "[4/4] ellipse/jcas/seed1: training (epochs 2) ... mean Dice" in out
    assert "Epoch" not in out  # the bundle's output goes to the cell logs
    assert "JCAS stage starts" in (tmp_path / "ellipse" / "jcas" / "seed1" / "train.log").read_text()
    record = json.loads((tmp_path / "ellipse" / "jcas" / "seed1" / "reproduce.json").read_text())
    assert record["seed"] == 1 and "--seed 1" in record["train_command"]

    per_seed = list(csv.DictReader((tmp_path / "results_seeds.csv").open()))
    assert [(r["variant"], r["seed"]) for r in per_seed] == [
        ("baseline", "0"), ("baseline", "1"), ("jcas", "0"), ("jcas", "1"),
    ]  # fmt: skip
    for r in per_seed:
        metrics = json.loads(
            (tmp_path / "ellipse" / r["variant"] / f"seed{r['seed']}" / "metrics.json").read_text()
        )
        assert r["mean_jac"] == f"{100 * metrics['mean_jac']:.3f}" and r["epochs"] == "2"
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["table"], r["variant"], r["seeds"]) for r in rows] == [
        ("ellipse", "baseline", "2"),
        ("ellipse", "jcas", "2"),
    ]
    assert list(rows[0])[:9] == [
        "table", "noise", "variant", "seeds", "seed_list", "dice_shaft", "dice_shaft_sd", "jac_shaft", "jac_shaft_sd",
    ]  # fmt: skip
    assert list(rows[0])[-11:] == [
        "diff_mean_dice", "diff_mean_dice_sd", "diff_mean_dice_ci_low", "diff_mean_dice_ci_high",
        "diff_mean_jac", "diff_mean_jac_sd", "diff_mean_jac_ci_low", "diff_mean_jac_ci_high",
        "diff_seeds", "epochs", "seconds",
    ]  # fmt: skip
    jcas, baseline = rows[1], rows[0]
    values = {v: [float(r["mean_jac"]) for r in per_seed if r["variant"] == v] for v in ("baseline", "jcas")}
    differences = [j - b for j, b in zip(values["jcas"], values["baseline"], strict=True)]
    assert float(jcas["mean_jac"]) == pytest.approx(statistics.fmean(values["jcas"]), abs=1e-3)
    assert float(jcas["diff_mean_jac"]) == pytest.approx(statistics.fmean(differences), abs=2e-3)
    assert jcas["diff_seeds"] == "2" and jcas["diff_mean_jac_ci_low"] and baseline["diff_mean_jac"] == ""

    text = (tmp_path / "results.md").read_text()
    assert "Seeds: 0, 1 (2 in all)." in text
    table = _cells(text)
    assert list(table) == ["Baseline", "Ours (JCAS)"] and table["Ours (JCAS)"][-1] == "2"
    assert all(re.fullmatch(r"\*{0,2}\d+\.\d{3} ± \d+\.\d{3}\*{0,2}", v) for v in table["Baseline"][:-1])
    assert list(_cells(text, 1)) == ["Ours (JCAS)"]
    assert (tmp_path / "jac_vs_epoch_ellipse.png").stat().st_size > 0
    assert (tmp_path / "matrices" / "ellipse_jcas_seed1.png").is_file()

    # one seed again (--seed keeps working): its cells are finished; the reports keep both seeds
    assert main([*common, "--variants", "baseline,jcas", "--seed", "1"]) == 0
    again = capsys.readouterr().out
    assert again.count("skipped (finished)") == 2 and "training" not in again
    assert "Seeds: 0, 1 (2 in all)." in (tmp_path / "results.md").read_text()


def test_peer_overlays_are_variants_named_beside_jcas_with_its_warm_up(tmp_path):
    peers = ["gce", "sce", "tloss", "volmin", "sparsereg", "coteaching", "nrdice"]
    variants = ["baseline", *peers, "jcas", "upper"]
    study = Study(out=tmp_path, noises=["ellipse", "symmetric50"], variants=variants, epochs=10, seeds=[0, 1])
    assert len(study.cells()) == 2 * (1 + 2 * 9)  # the upper bound once per seed
    for peer in peers:
        cell = next(c for c in study.cells() if c.variant == peer)
        assert Path(study.config_files(cell)[-1]) == REPO / "configs" / "peers" / f"{peer}.json"
        if peer == "coteaching":  # one stage: its forget-rate ramp is its warm-up
            assert not study.two_stage(peer) and "warmup_epochs" not in study.cell_overrides(cell)
        else:  # the loss peers take JCAS's two stages: half of --epochs of cross-entropy first
            assert study.two_stage(peer) and study.cell_overrides(cell)["warmup_epochs"] == "5"
    for variant in variants:
        noise = "clean" if variant == "upper" else "ellipse"
        for seed in (0, 1):
            _fake_cell(tmp_path, noise, variant, {"shaft": (0.5 + 0.01 * seed, 0.4)}, [0.1], seed)
    write_reports(tmp_path, {"upper"})
    names = ["GCE", "SCE", "T-Loss", "NR-Dice", "SparseReg", "VolMin", "Co-teaching"]
    table = _cells((tmp_path / "results.md").read_text())
    assert list(table) == ["Upper bound", "Baseline", "Ours (JCAS)", *names]
    paired = _cells((tmp_path / "results.md").read_text(), 1)
    assert list(paired) == ["Upper bound", "Ours (JCAS)", *names] and paired["GCE"][-1] == "2"
