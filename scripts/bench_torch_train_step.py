#!/usr/bin/env python3
"""Time whole training steps in PyTorch + pytorch-metric-learning: the PyTorch side of
`dml bench train --torch PYTHON`.

One step = forward, metric loss, backward, Adam step, on a fixed random batch built once (no
data loading), for the networks dml builds, each with the `direct` head (Linear to 128):

    small     small-conv-net   128x1x28x28   labels: 32 classes x 4 samples
    resnet18  ResNet-18        32x3x224x224  labels:  8 classes x 4 samples
    resnet50  ResNet-50 v1.5   32x3x224x224  labels:  8 classes x 4 samples

The loss is PML's `TripletMarginLoss(margin=0.2)` on the triplets of `BatchHardMiner()` (both
with PML's default distance, LpDistance on L2-normalised embeddings), the labels in P x K
order (each class's K samples consecutive, as dml's P x K sampler lays them out). `--loss
mean-square` uses the earlier stand-in loss instead, `mean(e^2)` over the embeddings. Adam has
PyTorch's defaults with lr 1e-4. Weights, images and labels come from seed 0.

Times per step (milliseconds, wall clock, each phase ended by the host returning):
    forward_ms    network forward + mining + loss (everything before backward)
    loss_ms       the mining + loss part of forward_ms
    backward_ms   zero_grad + loss.backward()
    optimizer_ms  Adam step
    step_ms       the whole step (the sum of the three above)

Peak memory: `peak_rss_mib` is the process's maximum resident set size (getrusage
ru_maxrss) after the model's last step, so it includes the interpreter and torch itself
(`rss_before_model_mib`, taken after import before the model is built, is that baseline).
ru_maxrss never goes down, so when more than one model is asked for (`all`), each model runs
in a fresh subprocess of this script and reports its own peak; a single model runs in
process (the process then holds only that model).

Run it outside the build, in a venv (not run by CI):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch pytorch-metric-learning==2.9.0
    /tmp/torchvenv/bin/python scripts/bench_torch_train_step.py [small|resnet18|resnet50|all] \
        [--steps 10] [--warmup 2] [--threads 2] [--loss triplet|mean-square] [--json]

The old positional form `... small 10 1` (model, steps, threads) still works. With `--json`
it prints one JSON object per line per model:
    {"model", "batch", "labels": [P, K], "threads", "loss", "step_ms": [...], "forward_ms",
     "loss_ms", "backward_ms", "optimizer_ms", "peak_rss_mib", "rss_before_model_mib",
     "torch", "pml"}
otherwise a table of medians.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

try:
    import pytorch_metric_learning
    from pytorch_metric_learning import losses, miners
except ImportError:  # only the mean-square mode works without PML
    pytorch_metric_learning = None

EMBEDDING_DIM = 128


def direct_head(in_features: int, embedding_dim: int) -> nn.Linear:
    """dml's `direct` head (crates/dml-models/src/head.rs): e = W f + b, W orthogonal, b zero."""
    head = nn.Linear(in_features, embedding_dim)
    nn.init.orthogonal_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def small_conv_net(embedding_dim: int) -> nn.Module:
    """dml's small-conv-net with the `direct` head: Prototypical Networks' encoder as dml
    builds it (bias-free convolutions, ReLU after the max pool; see
    crates/dml-models/src/backbone/small_conv.rs), a global average pool and a linear head."""

    def block(c_in: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c_in, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.MaxPool2d(2),
            nn.ReLU(),
        )

    return nn.Sequential(
        block(1), block(64), block(64), block(64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), direct_head(64, embedding_dim),
    )


class Downsample(nn.Sequential):
    """torchvision's projection shortcut: strided 1x1 convolution, batch norm."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3 (stride), bn, relu, conv3x3, bn, + shortcut, relu."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        project = stride != 1 or c_in != width
        self.downsample = Downsample(c_in, width, stride) if project else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's (v1.5) Bottleneck: conv1x1, bn, relu, conv3x3 (stride here, not on the
    first 1x1), bn, relu, conv1x1 to 4x width, bn, + shortcut, relu (dml's block.rs)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        project = stride != 1 or c_in != c_out
        self.downsample = Downsample(c_in, c_out, stride) if project else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def resnet(block, blocks, embedding_dim: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet trunk as dml builds it (crates/dml-models/src/backbone/resnet.rs):
    dml's stem order conv7x7/2, bn, maxpool 3x3/2 pad 1, relu (the same function as
    torchvision's relu-then-pool), four stages of base widths 64..512, the first unstrided,
    global average pool, `direct` head. Built by hand so the script needs only torch;
    initialised as torchvision does (Kaiming normal, fan-out; batch norms 1 and 0)."""
    layers = [
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
        nn.MaxPool2d(3, 2, 1), nn.ReLU(inplace=True),
    ]
    c_in = 64
    for stage, (width, count) in enumerate(zip([64, 128, 256, 512], blocks)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(block(c_in, width, stride))
            c_in = width * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), direct_head(c_in, embedding_dim)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def resnet18(embedding_dim: int) -> nn.Module:
    return resnet(BasicBlock, [2, 2, 2, 2], embedding_dim)


def resnet50(embedding_dim: int) -> nn.Module:
    return resnet(Bottleneck, [3, 4, 6, 3], embedding_dim)


# key: (reported name, builder, batch shape, (P classes, K samples per class))
CASES = {
    "small": ("small-conv-net", small_conv_net, (128, 1, 28, 28), (32, 4)),
    "resnet18": ("resnet18", resnet18, (32, 3, 224, 224), (8, 4)),
    "resnet50": ("resnet50", resnet50, (32, 3, 224, 224), (8, 4)),
}


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_loss(kind: str):
    """(embeddings, labels) -> (scalar loss). The miner runs without gradients (PML's miners
    do), then the loss on the mined triplets."""
    if kind == "mean-square":
        return lambda e, labels: e.square().mean()
    if pytorch_metric_learning is None:
        sys.exit("--loss triplet needs pytorch-metric-learning (pip install pytorch-metric-learning==2.9.0)")
    loss_fn = losses.TripletMarginLoss(margin=0.2)
    miner = miners.BatchHardMiner()

    def triplet(e, labels):
        return loss_fn(e, labels, miner(e, labels))

    return triplet


def bench(key: str, steps: int, warmup: int, threads: int, loss_kind: str) -> dict:
    name, build, batch, (p, k) = CASES[key]
    torch.set_num_threads(threads)
    rss_before = max_rss_mib()
    torch.manual_seed(0)
    net = build(EMBEDDING_DIM)
    net.train()
    optim = torch.optim.Adam(net.parameters(), lr=1e-4)
    images = torch.randn(batch)
    labels = torch.arange(p).repeat_interleave(k)
    assert labels.numel() == batch[0]
    loss_fn = make_loss(loss_kind)
    fwd, lss, bwd, adam, total = [], [], [], [], []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        e = net(images)
        t1 = time.perf_counter()
        loss = loss_fn(e, labels)
        t2 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optim.step()
        t4 = time.perf_counter()
        if not torch.isfinite(loss):
            raise RuntimeError(f"{name}: loss {loss.item()} at step {step}")
        if step >= warmup:
            fwd.append((t2 - t0) * 1e3)
            lss.append((t2 - t1) * 1e3)
            bwd.append((t3 - t2) * 1e3)
            adam.append((t4 - t3) * 1e3)
            total.append((t4 - t0) * 1e3)
    return {
        "model": name,
        "batch": list(batch),
        "labels": [p, k],
        "threads": threads,
        "loss": "TripletMarginLoss(margin=0.2)+BatchHardMiner" if loss_kind == "triplet"
        else "mean(e^2)",
        "steps": steps,
        "warmup": warmup,
        "step_ms": total,
        "forward_ms": fwd,
        "loss_ms": lss,
        "backward_ms": bwd,
        "optimizer_ms": adam,
        "peak_rss_mib": max_rss_mib(),
        "rss_before_model_mib": rss_before,
        "torch": torch.__version__,
        "pml": pytorch_metric_learning.__version__ if pytorch_metric_learning else None,
    }


def run_in_subprocess(key: str, args) -> dict:
    """One model in a fresh interpreter, so its peak RSS is its own."""
    cmd = [
        sys.executable, __file__, key, "--json", "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--threads", str(args.threads), "--loss", args.loss,
    ]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if len(lines) != 1:
        raise RuntimeError(f"{key}: expected one JSON line from {cmd}, got:\n{out}")
    return json.loads(lines[0])


def print_row(r: dict):
    med = statistics.median
    step = med(r["step_ms"])
    print(
        f"{r['model']:<16} {str(r['batch']).replace(' ', ''):>14} {med(r['forward_ms']):>10.1f}"
        f" {med(r['loss_ms']):>8.1f} {med(r['backward_ms']):>10.1f}"
        f" {med(r['optimizer_ms']):>10.1f} {step:>10.1f} {r['batch'][0] / step * 1e3:>8.1f}"
        f" {r['peak_rss_mib']:>9.0f}",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="all", choices=[*CASES, "all"])
    ap.add_argument("legacy", nargs="*", type=int, metavar="STEPS THREADS",
                    help="old positional form: steps, then threads")
    ap.add_argument("--steps", type=int, help="timed steps per model (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default 2)")
    ap.add_argument("--loss", choices=["triplet", "mean-square"], default="triplet")
    ap.add_argument("--json", action="store_true", help="one JSON object per line per model")
    args = ap.parse_args()
    if len(args.legacy) > 2:
        ap.error("at most two positional numbers: STEPS THREADS")
    legacy = args.legacy + [None] * (2 - len(args.legacy))
    args.steps = args.steps or legacy[0] or 10
    args.threads = args.threads or legacy[1] or 2
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("need --steps >= 1, --warmup >= 0, --threads >= 1")

    keys = list(CASES) if args.model == "all" else [args.model]
    if not args.json:
        print(f"torch {torch.__version__}, pml "
              f"{pytorch_metric_learning.__version__ if pytorch_metric_learning else '-'},"
              f" threads: {args.threads}, steps: {args.steps} (after {args.warmup} warm-up),"
              f" loss: {args.loss}; medians, fwd includes the loss column")
        print(f"{'model':<16} {'batch':>14} {'fwd ms':>10} {'loss ms':>8} {'bwd ms':>10}"
              f" {'adam ms':>10} {'step ms':>10} {'img/s':>8} {'peak MiB':>9}", flush=True)
    for key in keys:
        if len(keys) == 1:
            r = bench(key, args.steps, args.warmup, args.threads, args.loss)
        else:
            r = run_in_subprocess(key, args)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print_row(r)


if __name__ == "__main__":
    main()
