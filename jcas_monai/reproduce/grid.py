"""The study grid: one bundle training and one evaluation per (noise kind, variant, seed) cell.

A cell ``<noise>/<variant>/seed<k>`` is trained and evaluated by the bundle itself, each in a subprocess
(``python -m monai.bundle run training|evaluating``) so that a crash, a leak or an exhausted GPU stays
inside one cell. A variant is an overlay in ``configs/ablation`` (the paper's ablation) or, failing that,
in ``configs/peers`` (other noisy-label methods). Configs are merged in this order::

    bundle/configs/train.json, [configs/data/<data>.json], [configs/<preset>.json],
    configs/noise/<noise>.json, configs/{ablation,peers}/<variant>.json, [bundle/configs/evaluate.json]

The preset comes before the noise and ablation overlays so that a one-stage variant keeps its own
``warmup_epochs`` (``@max_epochs``) over the preset's stage split. Command-line overrides come last:
``bundle_root``, ``output_dir`` (the cell folder), ``seed`` (the cell's), ``datalist``, ``max_epochs``,
``warmup_epochs`` (only for two-stage variants, i.e. the overlays that leave ``warmup_epochs`` to the
bundle) and the user's ``--override key=value`` pairs.

A variant whose overlay trains on clean labels (``"noise_kind": "none"``, the upper bound) does not
depend on the noise kind: it is one cell per seed, ``clean/<variant>/seed<k>``, shared by every noise
kind's table.

Every cell is resumable: a cell with ``metrics.json`` is skipped, a cell whose training finished is
only evaluated, and an interrupted training is resumed by running the same command again (the bundle
restores its newest ``checkpoint_epoch=N.pt``). Subprocess output goes to ``<cell>/train.log`` and
``<cell>/eval.log`` (appended, one header per attempt); ``<cell>/reproduce.json`` records the seed, the
epochs, the accumulated wall time and the two commands. A folder of the earlier one-seed layout
(``<noise>/<variant>`` holding the cell itself) is moved into ``<noise>/<variant>/seed<k>``, ``k`` read
from its recorded command, before the study runs.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLEAN_NOISE",
    "Cell",
    "Study",
    "StudyError",
    "clean_label_variants",
    "format_seconds",
    "migrate_single_seed_cells",
    "run_study",
    "variant_overlays",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CLEAN_NOISE = "clean"
"""Noise overlay of the cells of clean-label variants (``configs/noise/clean.json``)."""

RECORD = "reproduce.json"
VARIANT_FOLDERS = ("ablation", "peers")
"""Folders of ``configs`` searched, in order, for a variant's overlay."""
SEED_FOLDER = re.compile(r"seed(\d+)$")
_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
_RESERVED = {
    "output_dir": "--out",
    "datalist": "--datalist",
    "max_epochs": "--epochs",
    "warmup_epochs": "--warmup-epochs",
    "seed": "--seeds",
    "bundle_root": None,
    "config_file": None,
}


class StudyError(ValueError):
    """Invalid study options; the message names the offending option, value or path."""


@dataclass(frozen=True)
class Cell:
    """One (noise kind, variant, seed) of the grid; its results live in ``<out>/<noise>/<variant>/seed<k>``."""

    noise: str
    variant: str
    seed: int = 0

    def __str__(self) -> str:
        return f"{self.noise}/{self.variant}/seed{self.seed}"

    def folder(self, out: Path) -> Path:
        return out / self.noise / self.variant / f"seed{self.seed}"


def _overlays(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json"))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def variant_overlays(repo: Path = REPO_ROOT) -> dict[str, Path]:
    """Overlay file of every variant: ``configs/ablation/<name>.json``, else ``configs/peers/<name>.json``."""
    found: dict[str, Path] = {}
    for folder in VARIANT_FOLDERS:
        for name in _overlays(repo / "configs" / folder):
            found.setdefault(name, repo / "configs" / folder / f"{name}.json")
    return dict(sorted(found.items()))


def clean_label_variants(repo: Path = REPO_ROOT) -> set[str]:
    """Variants trained on clean labels: their overlay sets ``noise_kind`` to ``none``."""
    return {v for v, path in variant_overlays(repo).items() if _read_json(path).get("noise_kind") == "none"}


def _choose(kind: str, names: Sequence[str], allowed: Sequence[str], where: Path | str) -> list[str]:
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise StudyError(
            f"unknown {kind} {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)} "
            f"(one overlay per name in {where})"
        )
    if not names:
        raise StudyError(f"no {kind} given; allowed: {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def _literal(value: str) -> Any:
    """A command-line value as the bundle's command line (Python Fire) reads it."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def newest_checkpoint_epoch(ckpt_dir: Path) -> int:
    """Epoch of the newest ``checkpoint_epoch=N.pt`` in ``ckpt_dir`` (0 when there is none)."""
    return max(
        (
            int(m.group(1))
            for p in ckpt_dir.glob("checkpoint_epoch=*.pt")
            if (m := _CHECKPOINT.search(p.name))
        ),
        default=0,
    )


def format_seconds(seconds: float) -> str:
    """``42s``, ``2m31s``, ``3h05m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Study:
    """Options of a study; checked on construction.

    Args:
        out: results folder (one subfolder per cell, reports at the top).
        noises: names of noise overlays in ``configs/noise``.
        variants: names of variant overlays in ``configs/ablation`` or ``configs/peers``.
        datalist: datalist JSON given to every cell (overrides the data overlay's ``datalist``).
        data: a data overlay: a name in ``configs/data`` or a JSON file.
        preset: a preset overlay in ``configs`` (``paper``).
        epochs: total epochs of every variant (``max_epochs``); the config's when ``None``.
        warmup_epochs: warm-up epochs of the two-stage variants; ``epochs // 2`` when only ``epochs``
            is given, the config's when both are ``None``.
        seeds: training seeds (config key ``seed``), one cell each; the noise overlays fix ``noise_seed``,
            so every seed trains on the same noisy labels.
        overrides: further ``key: value`` config overrides, values as typed on a command line.
        repo: repository root holding ``bundle/`` and ``configs/``.

    Raises:
        StudyError: unknown noise kind, variant, data overlay or preset (listing the allowed names), a
            missing datalist or data overlay file (naming the path), epochs out of range, no seed or a
            negative one, or an override of a key that has its own option.
    """

    out: Path
    noises: Sequence[str]
    variants: Sequence[str]
    datalist: Path | None = None
    data: str | None = None
    preset: str | None = None
    epochs: int | None = None
    warmup_epochs: int | None = None
    seeds: Sequence[int] = (0,)
    overrides: Mapping[str, str] = field(default_factory=dict)
    repo: Path = REPO_ROOT

    def __post_init__(self) -> None:
        self.out = Path(self.out).resolve()
        configs = self.repo / "configs"
        self.train_config = self.repo / "bundle" / "configs" / "train.json"
        self.eval_config = self.repo / "bundle" / "configs" / "evaluate.json"
        if not self.train_config.is_file():
            raise StudyError(f"no bundle at {self.repo} (missing {self.train_config})")
        self.noises = _choose("noise kind", self.noises, _overlays(configs / "noise"), configs / "noise")
        overlays = variant_overlays(self.repo)
        where = " or ".join(str(configs / folder) for folder in VARIANT_FOLDERS)
        self.variants = _choose("variant", self.variants, list(overlays), where)
        self.variant_paths = {v: overlays[v] for v in self.variants}
        self.variant_overlays = {v: _read_json(path) for v, path in self.variant_paths.items()}
        self.seeds = list(dict.fromkeys(self.seeds))
        if not self.seeds or min(self.seeds) < 0:
            raise StudyError(f"--seeds must be one or more non-negative integers, got {self.seeds}")
        self.data_config = self._data_config(configs / "data") if self.data else None
        if self.preset is not None:
            self.preset = _choose("preset", [self.preset], _overlays(configs), configs)[0]
        if self.datalist is not None:
            self.datalist = Path(self.datalist).resolve()
            if not self.datalist.is_file():
                raise StudyError(f"datalist {self.datalist} does not exist (--datalist)")
        if self.epochs is not None and self.epochs < 1:
            raise StudyError(f"--epochs must be at least 1, got {self.epochs}")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs <= (
            self.epochs or self.warmup_epochs
        ):
            raise StudyError(f"--warmup-epochs must be in [0, --epochs], got {self.warmup_epochs}")
        for key in self.overrides:
            if key in _RESERVED:
                option = _RESERVED[key]
                raise StudyError(
                    f"--override {key}=... is set by the study" + (f"; use {option}" if option else "")
                )

    def _data_config(self, folder: Path) -> Path:
        if self.data.endswith(".json"):
            path = Path(self.data).resolve()
            if not path.is_file():
                raise StudyError(f"data overlay {path} does not exist (--data)")
            return path
        name = _choose("data overlay", [self.data], _overlays(folder), folder)[0]
        return folder / f"{name}.json"

    @property
    def clean_variants(self) -> set[str]:
        """The study's variants trained on clean labels (see :func:`clean_label_variants`)."""
        return {v for v, overlay in self.variant_overlays.items() if overlay.get("noise_kind") == "none"}

    def cells(self) -> list[Cell]:
        """The grid, seed by seed (the first seed's table is complete first): each clean-label variant once
        (``clean/<variant>``), then noise kind x variant."""
        cells = []
        for seed in self.seeds:
            cells += [Cell(CLEAN_NOISE, v, seed) for v in self.variants if v in self.clean_variants]
            cells += [
                Cell(n, v, seed) for n in self.noises for v in self.variants if v not in self.clean_variants
            ]
        return cells

    def two_stage(self, variant: str) -> bool:
        """A two-stage variant leaves ``warmup_epochs`` to the bundle; a one-stage one sets it itself."""
        return "warmup_epochs" not in self.variant_overlays[variant]

    def config_files(self, cell: Cell, evaluate: bool = False) -> list[str]:
        configs = self.repo / "configs"
        files = [self.train_config]
        files += [self.data_config] if self.data_config else []
        files += [configs / f"{self.preset}.json"] if self.preset else []
        files += [configs / "noise" / f"{cell.noise}.json", self.variant_paths[cell.variant]]
        files += [self.eval_config] if evaluate else []
        return [str(f) for f in files]

    def cell_overrides(self, cell: Cell) -> dict[str, str]:
        """Command-line overrides of a cell, values as strings."""
        overrides = {
            "bundle_root": str(self.repo / "bundle"),
            "output_dir": str(cell.folder(self.out)),
            "seed": str(cell.seed),
        }
        if self.datalist is not None:
            overrides["datalist"] = str(self.datalist)
        if self.epochs is not None:
            overrides["max_epochs"] = str(self.epochs)
        if self.two_stage(cell.variant) and (self.epochs is not None or self.warmup_epochs is not None):
            warmup = self.warmup_epochs if self.warmup_epochs is not None else self.epochs // 2
            overrides["warmup_epochs"] = str(warmup)
        overrides.update(self.overrides)
        return overrides

    def command(self, cell: Cell, evaluate: bool = False) -> list[str]:
        """``python -m monai.bundle run training|evaluating --config_file [...] --key value ...``."""
        command = [sys.executable, "-m", "monai.bundle", "run", "evaluating" if evaluate else "training"]
        command += ["--config_file", json.dumps(self.config_files(cell, evaluate))]
        for key, value in self.cell_overrides(cell).items():
            command += [f"--{key}", value]
        return command

    def resolve(self, cell: Cell, keys: Sequence[str]) -> dict[str, Any]:
        """Values of ``keys`` in the merged training config of ``cell`` (absent keys are left out)."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(self.config_files(cell))
        parser.update({k: _literal(v) for k, v in self.cell_overrides(cell).items()})
        return {k: parser.get_parsed_content(k) for k in keys if k in parser}

    def check_inputs(self, cell: Cell) -> None:
        """Stop before any training when the configured datalist or pretrained weights file is missing.

        Raises:
            StudyError: naming the missing path and the config key.
        """
        found = self.resolve(cell, ["datalist", "synthetic_if_missing", "pretrained_weights", "device"])
        if self.preset is not None and str(found.get("device", "cpu")).startswith("cpu"):
            print(f"warning: no GPU found; the '{self.preset}' preset is meant for a GPU", file=sys.stderr)
        datalist = Path(found["datalist"])
        if not datalist.is_file() and not found.get("synthetic_if_missing", False):
            raise StudyError(f"datalist {datalist} does not exist (config key 'datalist'; give --datalist)")
        weights = found.get("pretrained_weights")
        if weights and not Path(weights).is_file():
            raise StudyError(
                f"pretrained weights {weights} do not exist (config key 'pretrained_weights'): save a "
                "torchvision-layout ImageNet ResNet state dict there or give --override pretrained_weights=PATH"
            )


def _run_logged(command: list[str], log: Path, cwd: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(command)}\n")
        f.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        done = subprocess.run(
            command,
            check=False,
            cwd=cwd,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        return done.returncode


def _record(folder: Path, update: dict[str, Any]) -> dict[str, Any]:
    path = folder / RECORD
    record = _read_json(path) if path.is_file() else {}
    record.update(update)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return record


def _scores(metrics_file: Path) -> str:
    metrics = _read_json(metrics_file)

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    return f"mean Dice {pct(metrics['mean_dice'])} Jac {pct(metrics['mean_jac'])}"


def _run_cell(study: Study, cell: Cell, prefix: str) -> bool:
    folder = cell.folder(study.out)
    epochs = study.epochs if study.epochs is not None else study.resolve(cell, ["max_epochs"])["max_epochs"]
    done = newest_checkpoint_epoch(folder / "models")
    finished = done >= epochs and (folder / "models" / "model.pt").is_file()
    if finished:
        stage = "training finished, evaluating"
    elif done:
        stage = f"training (resuming after epoch {done} of {epochs})"
    else:
        stage = f"training (epochs {epochs})"
    print(f"{prefix} {stage} ...", end=" ", flush=True)
    start = time.monotonic()
    train, evaluate = study.command(cell), study.command(cell, evaluate=True)
    record = {
        "noise": cell.noise,
        "variant": cell.variant,
        "seed": cell.seed,
        "epochs": epochs,
        "train_command": shlex.join(train),
    }
    record["eval_command"] = shlex.join(evaluate)
    previous = _read_json(folder / RECORD).get("seconds", 0.0) if (folder / RECORD).is_file() else 0.0
    status = 0 if finished else _run_logged(train, folder / "train.log", study.repo)
    log = folder / "train.log"
    if status == 0:
        status, log = _run_logged(evaluate, folder / "eval.log", study.repo), folder / "eval.log"
    elapsed = time.monotonic() - start
    _record(folder, {**record, "seconds": round(previous + elapsed, 1)})
    if status != 0 or not (folder / "metrics.json").is_file():
        print(f"FAILED (exit {status}; see {log}) ({format_seconds(elapsed)})", flush=True)
        return False
    print(f"{_scores(folder / 'metrics.json')} ({format_seconds(elapsed)})", flush=True)
    return True


def _recorded_seed(record: Path) -> int:
    """The ``--seed`` of a cell's recorded training command; 0 (the default then) when there is none."""
    command = shlex.split(_read_json(record).get("train_command", "")) if record.is_file() else []
    return int(command[command.index("--seed") + 1]) if "--seed" in command else 0


def migrate_single_seed_cells(out: Path) -> list[Path]:
    """Move every cell of the one-seed layout (``<out>/<noise>/<variant>`` holding ``reproduce.json`` or
    ``models/``) into ``seed<k>`` beside it, ``k`` being its recorded seed; returns the new folders.

    Raises:
        StudyError: the ``seed<k>`` folder exists already (naming both folders).
    """
    moved = []
    for folder in sorted({p.parent for pattern in (RECORD, "models") for p in out.glob(f"*/*/{pattern}")}):
        target = folder / f"seed{_recorded_seed(folder / RECORD)}"
        if target.exists():
            raise StudyError(
                f"{folder} holds a one-seed cell, but {target} exists too: move one of them away"
            )
        target.mkdir()
        for entry in folder.iterdir():
            if entry != target and not SEED_FOLDER.fullmatch(entry.name):
                entry.rename(target / entry.name)
        moved.append(target)
    return moved


def run_study(study: Study) -> list[Cell]:
    """Run every unfinished cell, printing one progress line per cell; returns the cells that failed.

    Cells of the one-seed layout are first moved into their ``seed<k>`` folder
    (:func:`migrate_single_seed_cells`).

    Raises:
        StudyError: the datalist or pretrained weights are missing (checked before the first training).
    """
    for folder in migrate_single_seed_cells(study.out):
        print(f"moved a cell of the one-seed layout into {folder}", flush=True)
    cells = study.cells()
    checked = False
    failed = []
    for index, cell in enumerate(cells, 1):
        prefix = f"[{index}/{len(cells)}] {cell}:"
        metrics = cell.folder(study.out) / "metrics.json"
        if metrics.is_file():
            print(f"{prefix} skipped (finished) {_scores(metrics)}", flush=True)
            continue
        if not checked:
            study.check_inputs(cell)
            checked = True
        if not _run_cell(study, cell, prefix):
            failed.append(cell)
    return failed
