"""Reference implementation (numpy + PIL + ONNX Runtime's Python API) of the ML node's
pre- and post-processing, written independently of the Rust code, as the test oracle.

- CLIP preprocessing exactly as Immich's machine-learning service does it (PIL bicubic to a
  224 shortest side, int-truncated centre crop, /255, OpenAI mean/std).
- YuNet decoding as OpenCV's FaceDetectorYN does it, on a 640x640 top-left letterbox.
- Face alignment with the Umeyama estimate (SVD, as skimage's SimilarityTransform) and a
  bilinear affine warp, then SFace.

Usage: python ml_oracle.py MODELS_DIR IMAGE OUT_TENSOR.f32  -> JSON on stdout
"""
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def clip_tensor(img):
    w, h = img.size
    if w < h:
        size = (224, int((h / w) * 224))
    else:
        size = (int((w / h) * 224), 224)
    img = img.resize(size, resample=Image.Resampling.BICUBIC)
    left = int(img.size[0] / 2 - 112)
    upper = int(img.size[1] / 2 - 112)
    img = img.crop((left, upper, left + 224, upper + 224))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def yunet(session, img, min_score=0.7, nms=0.3):
    w, h = img.size
    scale = min(640 / w, 640 / h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    canvas = Image.new("RGB", (640, 640))
    canvas.paste(img.resize((nw, nh), resample=Image.Resampling.BILINEAR), (0, 0))
    x = np.asarray(canvas, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1)[None].copy()
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
    dets = []
    for s in (8, 16, 32):
        cols = 640 // s
        cls = out[f"cls_{s}"].reshape(-1)
        obj = out[f"obj_{s}"].reshape(-1)
        bbox = out[f"bbox_{s}"].reshape(-1, 4)
        kps = out[f"kps_{s}"].reshape(-1, 10)
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        for i in np.nonzero(score >= min_score)[0]:
            r, c = divmod(int(i), cols)
            cx, cy = (c + bbox[i, 0]) * s, (r + bbox[i, 1]) * s
            bw, bh = np.exp(bbox[i, 2]) * s, np.exp(bbox[i, 3]) * s
            lm = [((kps[i, 2 * j] + c) * s, (kps[i, 2 * j + 1] + r) * s) for j in range(5)]
            dets.append((float(score[i]), [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], lm))
    dets.sort(key=lambda d: -d[0])
    keep = []
    for d in dets:
        if all(iou(d[1], k[1]) <= nms for k in keep):
            keep.append(d)
    ratio = nh / h
    return [
        {
            "score": float(sc),
            "bbox": [float(v / ratio) for v in b],
            "landmarks": [[float(px / ratio), float(py / ratio)] for px, py in lm],
        }
        for sc, b, lm in keep
    ]


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def umeyama(src, dst):
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / n
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1, 1] = -1
    r = u @ s @ vt
    var = (sc**2).sum() / n
    c = np.trace(np.diag(d) @ s) / var
    t = mu_d - c * r @ mu_s
    return np.hstack([c * r, t[:, None]])


def sface(session, img, landmarks):
    m = umeyama(np.array(landmarks, dtype=np.float64), TEMPLATE)
    full = np.vstack([m, [0, 0, 1]])
    inv = np.linalg.inv(full)
    crop = img.transform((112, 112), Image.Transform.AFFINE, tuple(inv[:2].reshape(-1)), resample=Image.Resampling.BILINEAR)
    x = np.asarray(crop, dtype=np.float32).transpose(2, 0, 1)[None].copy()
    return session.run(None, {session.get_inputs()[0].name: x})[0].reshape(-1)


def main():
    models, path, out_tensor = sys.argv[1], sys.argv[2], sys.argv[3]
    img = Image.open(path).convert("RGB")
    t = clip_tensor(img)
    t.astype("<f4").tofile(out_tensor)
    ort.set_default_logger_severity(3)
    vis = ort.InferenceSession(f"{models}/clip-test-color/visual/model.onnx")
    clip = vis.run(None, {"image": t})[0].reshape(-1)
    det = ort.InferenceSession(f"{models}/yunet-sface/detection/model.onnx")
    rec = ort.InferenceSession(f"{models}/yunet-sface/recognition/model.onnx")
    faces = yunet(det, img)
    for f in faces:
        f["embedding"] = [float(v) for v in sface(rec, img, f["landmarks"])]
    print(json.dumps({"clip": [float(v) for v in clip], "faces": faces}))


if __name__ == "__main__":
    main()
