"""DDP under em.Counter, one row per rank gathered on rank 0.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 examples/ddp_torchrun.py
"""
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import effmetrics as em

dist.init_process_group("gloo")
torch.manual_seed(0)
model = DDP(nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512)))
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
with em.Counter(model, count="every") as c:
    for _ in range(10):
        x = torch.randn(64, 512)
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        c.step(examples=len(x))
df = em.gather(c)
if dist.get_rank() == 0:
    print(c.report.by_collective().to_string())
    print(c.steps[["comm_bytes", "comm_time_s", "exposed_comm_s", "wall_s"]].tail(3).to_string())
    print(df.to_string())
    print(df.attrs)
dist.destroy_process_group()
