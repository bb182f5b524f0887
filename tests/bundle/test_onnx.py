"""ONNX export of the bundle's network with ``monai.bundle onnx_export``, checked with ONNX Runtime.

Needs the optional deploy extra (``requirements-deploy.txt``); skipped without it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import BUNDLE, INFERENCE, TINY
from monai.bundle import ConfigParser, onnx_export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch's ONNX exporter

METADATA = str(BUNDLE / "configs" / "metadata.json")
TINY_NET = {key: TINY[key] for key in ("spatial_size", "eval_grid_size", "backbone#width")}


def test_onnx_export_runs_in_onnxruntime_like_the_eager_network(tmp_path):
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update(TINY_NET)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    shape = [1, 3, *TINY["spatial_size"]]

    onnx_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.onnx"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=METADATA,
        config_file=INFERENCE,
        input_shape=shape,
        bundle_root=str(BUNDLE),
        **TINY_NET,
    )
    model = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    for seed in range(2):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = net(x)
        (got,) = session.run(None, {name: x.numpy()})
        assert got.shape == (1, 4, *TINY["spatial_size"])
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)
