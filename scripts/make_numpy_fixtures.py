"""Writes fixtures/numpy/: embeddings and labels saved by numpy itself, with Recall@K computed
by brute force in numpy, so that `dml eval` is tested on files numpy wrote (not on files
dml's own writer produced).

    python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy
    /tmp/np/bin/python scripts/make_numpy_fixtures.py

Recall@K as the survey papers define it: leave-one-out, a query is a hit if any of its K
nearest other items shares its label (ties to the lower index), every query counts.
"""
import json
import pathlib

import numpy as np

out = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "numpy"
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
n, d, classes = 60, 8, 12
labels = np.arange(n) % classes
centres = rng.standard_normal((classes, d))
x = centres[labels] + 0.9 * rng.standard_normal((n, d))

np.save(out / "embeddings_f32.npy", x.astype(np.float32))
np.save(out / "embeddings_f64_fortran.npy", np.asfortranarray(x))
np.save(out / "labels_i64.npy", labels.astype(np.int64))
np.save(out / "labels_u8.npy", labels.astype(np.uint8))
(out / "labels.txt").write_text("".join(f"class-{l}\n" for l in labels))

xf = x.astype(np.float32).astype(np.float64)
sq = ((xf[:, None, :] - xf[None, :, :]) ** 2).sum(-1)
np.fill_diagonal(sq, np.inf)
order = np.argsort(sq, axis=1, kind="stable")
recall = {}
for k in (1, 2, 4, 8):
    hits = (labels[order[:, :k]] == labels[:, None]).any(axis=1)
    recall[str(k)] = float(hits.mean())
(out / "expected.json").write_text(
    json.dumps({"num_queries": n, "recall_at_k": recall}, indent=2) + "\n"
)
print(recall)
