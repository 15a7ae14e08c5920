"""The generated repository on a real Triton server (CPU tritonserver 2.51 from the nvidia-pytriton wheel).

That server has only the Python backend: ONNX and TensorRT models must fail for exactly one
reason, the missing backend library (Triton then judges their config.pbtxt as text only), and
the end-to-end model must answer a tritonclient HTTP request with ``segexport predict``'s mask.
Skipped, naming the fix, where ``make triton-env`` has not installed the server.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image
from triton_server import TritonServer, find_env

from segexport.data import open_dataset
from segexport.deploy.predict import predict_images
from segexport.deploy.triton import write_triton_repo

pytestmark = pytest.mark.slow
MISSING_BACKEND = re.compile(r"unable to find backend library for backend '(onnxruntime|tensorrt)'")


@pytest.fixture(scope="module")
def triton_env():
    env = find_env()
    if isinstance(env, str):
        pytest.skip(env)
    try:
        import tritonclient.http  # noqa: F401  (the client the test speaks with)
    except ImportError as exc:
        pytest.skip(f"tritonclient does not import ({exc}); install the test extra: pip install -e '.[test]'")
    return env


def _accepted(entry: dict) -> bool:
    return entry.get("state") == "READY" or bool(MISSING_BACKEND.search(entry.get("reason", "")))


def _infer(url: str, model: str, data: bytes) -> np.ndarray:
    from tritonclient import http

    client = http.InferenceServerClient(url)
    image = http.InferInput("IMAGE", [1], "BYTES")
    image.set_data_from_numpy(np.array([data], dtype=np.object_))
    return client.infer(model, [image], outputs=[http.InferRequestedOutput("MASK")]).as_numpy("MASK")


def test_server_accepts_every_config_and_serves_predicts_mask(triton_env, build_with_engine, tmp_path):
    build = build_with_engine(max_batch=4)
    repo = tmp_path / "repo"
    written = write_triton_repo(build, repo, name="seg", python_backend=True)
    # A control: a config with a type Triton does not know must not pass the check below.
    shutil.copytree(repo / "seg_onnx", repo / "control")
    config = (repo / "control" / "config.pbtxt").read_text().replace('"seg_onnx"', '"control"')
    (repo / "control" / "config.pbtxt").write_text(config.replace("TYPE_FP32", "TYPE_FLOAT32", 1))
    sample = open_dataset("synthetic", "val", size=(45, 77), seed=5, length=1)[0]
    Image.fromarray(sample.image).save(tmp_path / "photo.png")
    want = predict_images(build / "model.onnx", [tmp_path / "photo.png"], out=tmp_path / "masks", progress=False)
    with Image.open(want[0].mask) as mask:
        expected = np.asarray(mask)

    with TritonServer(triton_env, repo, tmp_path / "server.log") as server:
        index = {entry["name"]: entry for entry in server.index()}
        got = _infer(server.url, "seg_e2e", (tmp_path / "photo.png").read_bytes())

    served = {m.name: m.platform for m in written.models}
    assert set(served) == {"seg_onnx", "seg_onnx-int8-cpu", "seg_trt-int8", "seg_e2e"}
    for name, platform in served.items():
        assert _accepted(index[name]), (name, platform, index[name], (tmp_path / "server.log").read_text()[-3000:])
    assert index["seg_e2e"]["state"] == "READY"
    assert not _accepted(index["control"]), index["control"]
    assert got.dtype == np.uint8 and got.shape == (45, 77)
    assert np.array_equal(got, expected)
