#!/usr/bin/env python3
"""Time one training step in PyTorch, the reference for dml's `train_step` example.

The same networks, batches and step as crates/dml-models/examples/train_step.rs:
forward, loss = mean(e^2) over the embeddings, backward, Adam, on a fixed random batch
(no data loading), reporting the median forward / backward / Adam / step times and
images per second. Not run by CI.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchvenv/bin/python scripts/bench_torch_train_step.py [small|resnet18|all] [STEPS] [THREADS]

THREADS defaults to 2 (the CI machine's cores).
"""

import statistics
import sys
import time

import torch
from torch import nn


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
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, embedding_dim),
    )


def resnet18(embedding_dim: int) -> nn.Module:
    """torchvision's ResNet-18 with its classifier replaced by the `direct` head, as dml builds
    it. Built here rather than imported so the script needs only torch."""

    class BasicBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or c_in != c_out:
                self.downsample = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    # dml's stem order (max pool, then ReLU: the same function as torchvision's).
    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.MaxPool2d(3, 2, 1),
        nn.ReLU(inplace=True),
    ]
    c_in = 64
    for i, width in enumerate([64, 128, 256, 512]):
        stride = 1 if i == 0 else 2
        layers += [BasicBlock(c_in, width, stride), BasicBlock(width, width, 1)]
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, embedding_dim)]
    return nn.Sequential(*layers)


CASES = {
    "small": ("small-conv-net", small_conv_net, (128, 1, 28, 28)),
    "resnet18": ("resnet18", resnet18, (32, 3, 224, 224)),
}


def bench(name, build, batch, steps, warmup=2):
    torch.manual_seed(0)
    net = build(128)
    net.train()
    optim = torch.optim.Adam(net.parameters(), lr=1e-4)
    images = torch.randn(batch)
    fwd, bwd, adam, total = [], [], [], []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        loss = net(images).square().mean()
        t1 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optim.step()
        t3 = time.perf_counter()
        if step >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            adam.append(t3 - t2)
            total.append(t3 - t0)
    ms = lambda xs: statistics.median(xs) * 1e3
    step_ms = ms(total)
    print(
        f"{name:<16} {str(list(batch)).replace(' ', ''):>14} {ms(fwd):>10.1f} {ms(bwd):>10.1f}"
        f" {ms(adam):>10.1f} {step_ms:>10.1f} {batch[0] / step_ms * 1e3:>9.1f}"
    )


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, threads: {threads}, steps: {steps} (after 2 warm-up)")
    print(f"{'model':<16} {'batch':>14} {'fwd ms':>10} {'bwd ms':>10} {'adam ms':>10}"
          f" {'step ms':>10} {'img/s':>9}")
    for key, (name, build, batch) in CASES.items():
        if which in (key, "all"):
            bench(name, build, batch, steps)


if __name__ == "__main__":
    main()
