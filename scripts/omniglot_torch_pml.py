#!/usr/bin/env python3
"""configs/omniglot.toml in PyTorch + pytorch-metric-learning, end to end, to compare with
`dml run --config configs/omniglot.toml` for speed (and, loosely, accuracy).

What it mirrors (file: dml source it follows):
- data (crates/dml-data/src/dataset/omniglot.rs, store.rs): training on
  images_background_small1.zip, labels = characters (`<alphabet>/<character>`, 136 classes x
  20 drawings); test on the alphabets Japanese_(katakana), Sanskrit and Tagalog of
  images_background_small2.zip (106 characters, none seen in training). The zips are read
  directly (zipfile + PIL), the archive's single top folder skipped, image files only.
- preprocessing (crates/dml-data/src/transform.rs, [data.pipeline]): grey, resized so the
  shorter side is 28 (PIL's bilinear, which like the image crate's triangle filter widens
  its support when shrinking), centre crop 28, /255, (x - 0.5) / 0.5. No augmentation, so
  every image is decoded and transformed once, up front, and kept in memory (dml caches too).
- sampler (crates/dml-data/src/sampler/pk.rs): P x K = 32 classes x 4 drawings, built per
  epoch as dml does: each class's drawings shuffled and cut into groups of 4 (remainder
  waits), batches filled greedily from the 32 classes with most groups left (random
  tie-break), leftovers dropped, batch order shuffled: 21 batches of 128 per epoch here.
  (dml's generator is ChaCha8; this one is numpy's, so the batches differ, not their shape.)
- model (crates/dml-models/src/backbone/small_conv.rs, head.rs): 4 x [conv3x3 pad 1, 64
  channels, no bias; BatchNorm; MaxPool 2; ReLU], global average pool, head `direct-l2`:
  e = (W f + b) / sqrt(max(|W f + b|^2, 1e-12)), W 64x64 orthogonal, b zero; embedding 64.
  Conv weights U(+-1/sqrt(fan_in)) (PyTorch's default, which dml copies).
- loss (crates/dml-losses: registry.rs, miner/semi_hard.rs): PML TripletMarginLoss(margin
  0.2) with PML's defaults. dml's "SemiHardMiner" is NOT PML's TripletMarginMiner(
  type_of_triplets="semihard") (PML has no equivalent): it is TensorFlow's / FaceNet's rule,
  one triplet per positive pair (a, p): the nearest negative farther than p, or, if there is
  none, the farthest negative; ties to the lower index; distance LpDistance on normalised
  embeddings (PML's default). It is implemented below (`semi_hard_triplets`) and passed to
  the PML loss as indices_tuple. `--pml-semihard` uses PML's TripletMarginMiner(margin=0.2,
  type_of_triplets="semihard") instead.
- optimiser: Adam, lr 1e-3, PyTorch defaults otherwise (dml's defaults are the same).
- evaluation (crates/dml-eval, [eval]) every 5 epochs and after the last, in eval mode, batch
  256, leave-one-out on the test split, squared Euclidean: exact Recall@1/2/4/8 (computed
  here), MAP@R and precision@1 (PML AccuracyCalculator, CustomKNN, k="max_bin_count"), NMI
  (AccuracyCalculator with scikit-learn k-means: clusters = classes, k-means++, 3 restarts,
  20 iterations, seed 0, as dml's kmeans.rs; sklearn's stopping rule differs), and 20-way
  1-shot accuracy within an alphabet (1000 episodes, 1 query per class, nearest support;
  Tagalog's 17 characters cannot make 20-way episodes, so they come from the other two).

Timing: per-epoch training time, evaluation time, total wall time from process start
(imports, data loading, training, evaluation), training images/s (images trained on /
training time) and end-to-end images/s (the same images / total wall time).

Run outside the build, in a venv (not run by CI); paths relative to the repository root:

    /tmp/torchvenv/bin/pip install torch pytorch-metric-learning==2.9.0 pillow scikit-learn
    /tmp/torchvenv/bin/python scripts/omniglot_torch_pml.py [--epochs 30] [--threads 2] \
        [--eval-every 5] [--seed 0] [--data ../shared/datasets/omniglot] [--json]

With `--json` the last line is one JSON object with the timings and the final metrics.
"""

import time

T_PROCESS = time.perf_counter()  # before the heavy imports: they count in the wall time

import argparse
import heapq
import io
import json
import math
import os
import sys
import zipfile

import numpy as np
import torch
from PIL import Image
from torch import nn
import torch.nn.functional as F

import pytorch_metric_learning
from pytorch_metric_learning import distances, losses, miners
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp")
TEST_ALPHABETS = ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
P, K = 32, 4
EMBEDDING_DIM = 64
L2_EPSILON = 1e-12


# ---------------------------------------------------------------- data


def is_image_path(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    if base.startswith("."):
        return False
    return "." in base and base.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def preprocess(data: bytes, size: int = 28, crop: int = 28) -> np.ndarray:
    """dml's evaluation transform for [data.pipeline] (gray, resize, centre crop, normalise)."""
    img = Image.open(io.BytesIO(data)).convert("L")
    w, h = img.size
    if w <= h:
        nw, nh = size, max(size, round(h * size / w))
    else:
        nw, nh = max(size, round(w * size / h)), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32) / 255.0
    return (x - 0.5) / 0.5


def load_omniglot(path: str, alphabets=None):
    """(images [n,1,28,28] float32, labels [n] int64, alphabet ids [n] int64) of one zip,
    files in sorted order, classes `<alphabet>/<character>` given dense sorted ids."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
        tops = {n.split("/", 1)[0] for n in z.namelist()}
        prefix = next(iter(tops)) + "/" if len(tops) == 1 else ""
        entries = []
        for n in names:
            rel = n[len(prefix):] if n.startswith(prefix) else n
            if not is_image_path(rel):
                continue
            parts = rel.rsplit("/", 3)
            if len(parts) < 3:
                raise ValueError(f"{path}:{n}: expected <alphabet>/<character>/<drawing>.png")
            alphabet, character = parts[-3], parts[-2]
            if alphabets is not None and alphabet not in alphabets:
                continue
            entries.append((n, f"{alphabet}/{character}", alphabet))
        if alphabets is not None:
            missing = set(alphabets) - {a for _, _, a in entries}
            if missing:
                raise ValueError(f"{path}: unknown alphabet(s) {sorted(missing)}")
        images = np.stack([preprocess(z.read(n)) for n, _, _ in entries])[:, None]
    classes = {c: i for i, c in enumerate(sorted({c for _, c, _ in entries}))}
    supers = {a: i for i, a in enumerate(sorted({a for _, _, a in entries}))}
    labels = np.array([classes[c] for _, c, _ in entries], dtype=np.int64)
    alpha = np.array([supers[a] for _, _, a in entries], dtype=np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels), alpha


class PkSampler:
    """dml's P x K sampler (crates/dml-data/src/sampler/pk.rs), small classes an error."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int):
        self.p, self.k, self.seed = p, k, seed
        self.classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        small = [c for c, m in enumerate(self.classes) if len(m) < k]
        if small:
            raise ValueError(f"classes {small} have fewer than K = {k} samples")
        if len(self.classes) < p:
            raise ValueError(f"need {p} classes, have {len(self.classes)}")

    def batches_per_epoch(self) -> int:
        groups = [len(m) // self.k for m in self.classes]
        lo, hi = 0, sum(groups) // self.p
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if sum(min(g, mid) for g in groups) >= self.p * mid:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def batches(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        groups = []
        for members in self.classes:
            s = rng.permutation(members)
            n = len(s) // self.k * self.k
            groups.append([s[i:i + self.k] for i in range(0, n, self.k)])
        # max-heap on (groups left, random tie-break), as a min-heap of negatives
        heap = [(-len(g), -rng.random(), c) for c, g in enumerate(groups)]
        heapq.heapify(heap)
        batches = []
        while len(heap) >= self.p:
            taken = [heapq.heappop(heap) for _ in range(self.p)]
            batches.append(np.concatenate([groups[c].pop() for _, _, c in taken]))
            for left, _, c in taken:
                if -left - 1 > 0:
                    heapq.heappush(heap, (left + 1, -rng.random(), c))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]


# ---------------------------------------------------------------- model


class DirectL2(nn.Module):
    """dml's `direct-l2` head: (W f + b) / sqrt(max(|W f + b|^2, 1e-12))."""

    def __init__(self, in_features: int, embedding_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_features, embedding_dim)
        nn.init.orthogonal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, f):
        e = self.linear(f)
        return e / e.square().sum(1, keepdim=True).clamp_min(L2_EPSILON).sqrt()


def small_conv_net(embedding_dim: int) -> nn.Module:
    def block(c_in: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c_in, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
            nn.MaxPool2d(2), nn.ReLU(),
        )

    return nn.Sequential(
        block(1), block(64), block(64), block(64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), DirectL2(64, embedding_dim),
    )


# ---------------------------------------------------------------- loss


@torch.no_grad()
def semi_hard_triplets(embeddings: torch.Tensor, labels: torch.Tensor, distance):
    """dml's SemiHardMiner (crates/dml-losses/src/miner/semi_hard.rs): for every positive
    pair (a, p), in (a, p) order, the negative n with the smallest d(a, n) > d(a, p), else
    the one with the largest d(a, n); ties to the lower index; anchors without negatives
    give nothing."""
    d = distance(embeddings)  # [n, n]; LpDistance: larger is farther
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    pos = same & ~eye
    neg = ~same
    pos &= neg.any(1, keepdim=True)
    a, p = pos.nonzero(as_tuple=True)
    da = d[a]  # [pairs, n]
    negs = neg[a]
    farther = negs & (da > d[a, p][:, None])
    closest = torch.where(farther, da, torch.full_like(da, math.inf)).argmin(1)
    farthest = torch.where(negs, da, torch.full_like(da, -math.inf)).argmax(1)
    n = torch.where(farther.any(1), closest, farthest)
    return a, p, n


def make_loss(pml_semihard: bool):
    loss_fn = losses.TripletMarginLoss(margin=0.2)
    if pml_semihard:
        miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
        return lambda e, y: loss_fn(e, y, miner(e, y))
    distance = distances.LpDistance()  # PML's default: p 2, power 1, normalised embeddings
    return lambda e, y: loss_fn(e, y, semi_hard_triplets(e, y, distance))


# ---------------------------------------------------------------- evaluation


class SkKMeans:
    """k-means for AccuracyCalculator's NMI, with dml's settings (faiss is not needed)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, x, clusters):
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=clusters, init="k-means++", n_init=3, max_iter=20, tol=1e-4,
                    random_state=self.seed)
        return torch.from_numpy(km.fit_predict(x.cpu().numpy().astype(np.float64)))


@torch.no_grad()
def embed(net, images, batch=256):
    net.eval()
    out = torch.cat([net(images[i:i + batch]) for i in range(0, len(images), batch)])
    net.train()
    return out


def one_shot_accuracy(emb, labels, groups, ways=20, episodes=1000, seed=0):
    """20-way 1-shot, 1 query per class, within one group (alphabet): nearest support."""
    rng = np.random.default_rng(seed)
    labels = labels.numpy()
    by_group = {}
    for g in np.unique(groups):
        classes = {c: np.flatnonzero((labels == c) & (groups == g))
                   for c in np.unique(labels[groups == g])}
        usable = [m for m in classes.values() if len(m) >= 2]
        if len(usable) >= ways:
            by_group[g] = usable
    if not by_group:
        return None
    keys = sorted(by_group)
    emb = emb.numpy().astype(np.float64)
    acc = []
    for _ in range(episodes):
        members = by_group[keys[rng.integers(len(keys))]]
        chosen = rng.choice(len(members), ways, replace=False)
        picks = np.array([rng.choice(members[c], 2, replace=False) for c in chosen])
        s, q = emb[picks[:, 0]], emb[picks[:, 1]]
        d = (q * q).sum(1)[:, None] - 2 * q @ s.T + (s * s).sum(1)[None, :]
        acc.append(np.mean(d.argmin(1) == np.arange(ways)))
    acc = np.array(acc)
    return float(acc.mean()), float(1.96 * acc.std() / math.sqrt(len(acc)))


def evaluate(net, images, labels, groups, seed):
    t = time.perf_counter()
    emb = embed(net, images)
    sq = distances.LpDistance(normalize_embeddings=False, p=2, power=2)
    d = sq(emb)
    d.fill_diagonal_(math.inf)
    nearest = d.topk(8, largest=False).indices
    hit = labels[nearest] == labels[:, None]
    metrics = {f"recall@{k}": hit[:, :k].any(1).float().mean().item() for k in (1, 2, 4, 8)}
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "NMI"), k="max_bin_count",
        device=torch.device("cpu"), knn_func=CustomKNN(sq), kmeans_func=SkKMeans(seed),
    )
    pml = calc.get_accuracy(emb, labels)
    metrics["map@r"] = float(pml["mean_average_precision_at_r"])
    metrics["precision@1"] = float(pml["precision_at_1"])
    metrics["nmi"] = float(pml["NMI"])
    shot = one_shot_accuracy(emb, labels, groups, seed=seed)
    if shot is not None:
        metrics["one_shot_20way"], metrics["one_shot_20way_ci95"] = shot
    metrics["seconds"] = time.perf_counter() - t
    return metrics


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data", default="../shared/datasets/omniglot",
                    help="folder of the Omniglot zips (default: relative to the repo root)")
    ap.add_argument("--pml-semihard", action="store_true",
                    help="PML's TripletMarginMiner(semihard) instead of dml's SemiHardMiner")
    ap.add_argument("--json", action="store_true", help="a final JSON summary line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
        (lambda *a: print(*a, flush=True))

    t_load = time.perf_counter()
    train_x, train_y, _ = load_omniglot(os.path.join(args.data, "images_background_small1.zip"))
    test_x, test_y, test_groups = load_omniglot(
        os.path.join(args.data, "images_background_small2.zip"), TEST_ALPHABETS)
    load_s = time.perf_counter() - t_load
    say(f"torch {torch.__version__}, pml {pytorch_metric_learning.__version__}, threads "
        f"{args.threads}; data: train {len(train_x)} images / {len(train_y.unique())} classes,"
        f" test {len(test_x)} / {len(test_y.unique())}, decoded in {load_s:.2f} s"
        f" (imports {t_load - T_PROCESS:.2f} s)")

    sampler = PkSampler(train_y.numpy(), P, K, args.seed)
    net = small_conv_net(EMBEDDING_DIM)
    net.train()
    optim = torch.optim.Adam(net.parameters(), lr=args.lr)
    loss_fn = make_loss(args.pml_semihard)

    epoch_s, evals, trained_images, eval_s = [], [], 0, 0.0
    for epoch in range(args.epochs):
        t = time.perf_counter()
        total_loss, batches = 0.0, sampler.batches(epoch)
        for idx in batches:
            idx = torch.from_numpy(idx)
            x, y = train_x[idx], train_y[idx]
            loss = loss_fn(net(x), y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total_loss += loss.item()
            trained_images += len(idx)
        epoch_s.append(time.perf_counter() - t)
        line = (f"epoch {epoch + 1:>3}/{args.epochs}: {len(batches)} batches, loss"
                f" {total_loss / len(batches):.4f}, {epoch_s[-1]:.2f} s,"
                f" {len(batches) * P * K / epoch_s[-1]:.0f} img/s")
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            m = evaluate(net, test_x, test_y, test_groups, args.seed)
            m["epoch"] = epoch + 1
            evals.append(m)
            eval_s += m["seconds"]
            line += "; eval " + ", ".join(
                f"{k} {v:.4f}" for k, v in m.items() if k not in ("epoch", "seconds")
            ) + f" ({m['seconds']:.2f} s)"
        say(line)

    wall_s = time.perf_counter() - T_PROCESS
    train_s = sum(epoch_s)
    summary = {
        "framework": "pytorch+pml",
        "torch": torch.__version__,
        "pml": pytorch_metric_learning.__version__,
        "threads": args.threads,
        "epochs": args.epochs,
        "batches_per_epoch": sampler.batches_per_epoch(),
        "batch": P * K,
        "miner": "PML TripletMarginMiner(semihard)" if args.pml_semihard
        else "dml SemiHardMiner (TF rule)",
        "train_images": trained_images,
        "import_s": t_load - T_PROCESS,
        "load_s": load_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "wall_s": wall_s,
        "epoch_s": epoch_s,
        "train_images_per_s": trained_images / train_s if train_s else None,
        "end_to_end_images_per_s": trained_images / wall_s,
        "final": evals[-1] if evals else None,
        "evals": evals,
    }
    say(f"total {wall_s:.2f} s (imports {summary['import_s']:.2f}, data {load_s:.2f},"
        f" train {train_s:.2f}, eval {eval_s:.2f}); {trained_images} training images:"
        f" {summary['train_images_per_s']:.0f} img/s training,"
        f" {summary['end_to_end_images_per_s']:.0f} img/s end to end")
    if args.json:
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
