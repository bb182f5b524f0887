"""``multi_gpu_train.json``: two DDP processes (gloo on CPU) through torchrun, as a user would start them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import BUNDLE, TINY, TRAIN

MULTI_GPU = str(BUNDLE / "configs" / "multi_gpu_train.json")

# each process saves what it ended with, to compare the ranks (appended after destroy_process_group)
RANK_STATE = (
    "$torch.save({'network': @network.state_dict(), 'loss': @loss.state_dict(),"
    " 'lr': [g['lr'] for g in @optimizer.param_groups]},"
    " os.path.join(@output_dir, 'rank' + os.environ['RANK'] + '.pt'))"
)


@pytest.fixture(scope="module")
def ddp_run(tiny_dataset, tmp_path_factory):
    """Model-zoo's ``_dist`` form (``export_config_and_run_mgpu_cmd``): the configs merged with the overrides
    and exported as one file, then ``torchrun ... -m monai.bundle run --config_file F --meta_file M
    --logging_file L``."""
    from monai.bundle import ConfigParser

    out = tmp_path_factory.mktemp("ddp")
    overrides = dict(TINY, batch_size=2, val_batch_size=2, dataset_dir=str(tiny_dataset), output_dir=str(out))
    overrides.update({"bundle_root": str(BUNDLE), "train#trainer#max_epochs": 2})
    dump = out / "dump_rank_state.json"
    dump.write_text(json.dumps({"+finalize": [RANK_STATE]}))
    parser = ConfigParser()
    parser.read_config([TRAIN, MULTI_GPU, str(dump)])
    parser.update(pairs=overrides)
    exported = out / "train_override.json"
    ConfigParser.export_config_file(parser.config, str(exported), indent=4)
    configs = BUNDLE / "configs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", str(exported)]
    cmd += ["--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf")]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=240, env=env)
    return out, proc


def test_two_processes_train_and_write_each_file_once(ddp_run):
    out, proc = ddp_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    models = out / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=2.pt",
        "model.pt",
        "warmup_model.pt",
    ]
    full = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    # 8 training images over 2 ranks at batch size 2: 2 iterations per rank and epoch, 2 epochs
    assert full["trainer"]["epoch_length"] == 2 and full["trainer"]["epoch"] == 2
    state = torch.load(models / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    log = proc.stdout + proc.stderr
    assert log.count("noise transition matrices written") == 1  # NTM report on rank 0 only
    assert log.count("Epoch 2: JCAS stage") == 2  # the stage switch on both ranks


def test_ranks_end_with_identical_weights_matrices_and_schedule(ddp_run):
    out, proc = ddp_run
    assert proc.returncode == 0
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["lr"] == rank1["lr"]  # the LR scheduler stepped on both ranks
    for part in ("network", "loss"):
        assert rank0[part].keys() == rank1[part].keys()
        for key in rank0[part]:
            torch.testing.assert_close(
                rank0[part][key], rank1[part][key], rtol=0, atol=0, msg=f"{part} {key}"
            )
    assert {"t_c.weight", "t_a.weight"} <= set(rank0["loss"])
    # the final full-state checkpoint is the state the ranks ended with
    full = torch.load(out / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    for key, value in full["network"].items():
        torch.testing.assert_close(value, rank0["network"][key], rtol=0, atol=0)
    torch.testing.assert_close(full["loss"]["t_c.weight"], rank0["loss"]["t_c.weight"], rtol=0, atol=0)
