"""Tiny ONNX generators built with onnx.helper (no TensorFlow) for runtime tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_generator(path: Path, latent_dim: int = 8, size: int = 16, seed: int = 0, nan: bool = False,
                   channels: int = 1, metadata: dict | None = None, classes: tuple[str, ...] = ()) -> Path:
    """z [batch, latent] -> tanh(z W + b) reshaped to [batch, channels, size, size]. With `classes`
    a labelled generator: a second input `label` [batch] int64, whose class adds its own row of an
    offset table C to z W + b (metadata `classes` names them)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((latent_dim, channels * size * size)).astype(np.float32) * 0.5
    b = rng.standard_normal(channels * size * size).astype(np.float32) * 0.1
    if nan:
        b[3] = np.nan
    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["zw"]),
        helper.make_node("Add", ["zw", "B"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["image"]),
    ]
    inputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_dim])]
    init = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(np.array([-1, channels, size, size], np.int64), "shape")]
    if classes:
        offsets = rng.standard_normal((len(classes), channels * size * size)).astype(np.float32)
        nodes[1:2] = [helper.make_node("Add", ["zw", "B"], ["pre0"]),
                      helper.make_node("Gather", ["C", "label"], ["offset"], axis=0),
                      helper.make_node("Add", ["pre0", "offset"], ["pre"])]
        inputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]))
        init.append(numpy_helper.from_array(offsets, "C"))
    graph = helper.make_graph(
        nodes, "tiny_generator", inputs,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, size, size])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {"latent_dim": str(latent_dim), "image_size": str(size), "synthetic": "true", "run_id": "tiny",
                **({"classes": json.dumps(list(classes))} if classes else {}), **(metadata or {})}
    for k, v in metadata.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def reference_output(path: Path, z: np.ndarray) -> np.ndarray:
    """What the tiny generator computes, in numpy."""
    model = onnx.load(path)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    flat = np.tanh(z @ init["W"] + init["B"])
    return flat.reshape(len(z), *[int(x) for x in init["shape"][1:]])
