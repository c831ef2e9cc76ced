"""PML 2.9 ContrastiveLoss() forward + backward at D=128, 4 per class, 2 threads: median ms.

The issue's PML table has no N=8192 number for contrastive; this measures it beside
`dml bench losses --only contrastive`. Run outside the build, in a venv:
    pip install torch pytorch-metric-learning==2.9.0
    python scripts/bench_pml_contrastive.py 8192 5
"""
import sys, time, resource
import torch
from pytorch_metric_learning import losses
torch.set_num_threads(2)
n = int(sys.argv[1]); reps = int(sys.argv[2])
g = torch.Generator().manual_seed(0)
x = torch.randn(n, 128, generator=g)
labels = torch.arange(n) // 4
loss_fn = losses.ContrastiveLoss()
times = []
for r in range(reps + 1):
    e = x.clone().requires_grad_(True)
    t = time.perf_counter()
    loss = loss_fn(e, labels)
    loss.backward()
    _ = e.grad.sum().item()
    if r > 0:
        times.append((time.perf_counter() - t) * 1e3)
times.sort()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"PML ContrastiveLoss N={n}: median {times[len(times)//2]:.1f} ms [{times[0]:.1f}-{times[-1]:.1f}], peak {peak:.0f} MiB")
