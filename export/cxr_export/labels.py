"""A labelled generator's ONNX interface: the class as an input beside z.

Keras' labelled G takes one vector, the latent then the one-hot class (cxr_training.models). Every
graph the export builds, gates and quantises keeps that joined input; the published models get
`with_class_input`: inputs z [batch, latent_dim] float32 and label [batch] int64 (an index into the
metadata's `classes`), joined in the graph by OneHot and Concat before the original first layer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cxr_runtime.contract import CLASS_INPUT, INPUT_NAME

JOINED = "z_and_class"  # the original input's name inside a wrapped graph


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g, old, new)
            for g in attr.graphs:
                _rename(g, old, new)


def with_class_input(model: onnx.ModelProto, latent_dim: int, classes: int) -> onnx.ModelProto:
    """A copy of `model` (input z of latent_dim + classes) with inputs z (latent_dim) and label."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    (joined,) = [i for i in graph.input if i.name == INPUT_NAME]
    dims = joined.type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value != latent_dim + classes:
        raise ValueError(f"the graph's input is not the latent ({latent_dim}) joined to {classes} classes")
    _rename(graph, INPUT_NAME, JOINED)
    graph.initializer.extend([numpy_helper.from_array(np.array(classes, np.int64), "class_depth"),
                              numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "class_off_on")])
    nodes = [
        helper.make_node("OneHot", [CLASS_INPUT, "class_depth", "class_off_on"], ["class_onehot"], axis=-1,
                         name="class_onehot"),
        helper.make_node("Concat", [INPUT_NAME, "class_onehot"], [JOINED], axis=1, name="join_class"),
    ]
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    kept = [i for i in graph.input if i.name != INPUT_NAME]
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", latent_dim]),
                        helper.make_tensor_value_info(CLASS_INPUT, TensorProto.INT64, ["batch"]), *kept])
    return out


def joined_latents(z: np.ndarray, classes: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The Keras model's input: latents z then the one-hot class (default: the classes in turn)."""
    if labels is None:
        labels = np.arange(len(z)) % classes
    return np.concatenate([z, np.eye(classes, dtype=np.float32)[labels]], axis=1).astype(np.float32)
