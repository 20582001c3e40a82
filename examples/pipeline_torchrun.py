"""A 2-stage GPipe pipeline on CPU over gloo, each stage under em.Counter: its bubble per step
against the theory (p-1)/(m+p-1).

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 examples/pipeline_torchrun.py
"""
import statistics

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

import effmetrics as em

dist.init_process_group("gloo")
rank, stages, m = dist.get_rank(), dist.get_world_size(), 4
torch.set_num_threads(1)
torch.manual_seed(0)
stage_mod = nn.Sequential(nn.Linear(1024, 1024), nn.Tanh(), nn.Linear(1024, 1024), nn.Tanh())
stage = PipelineStage(stage_mod, rank, stages, torch.device("cpu"))
schedule = ScheduleGPipe(stage, n_microbatches=m, loss_fn=lambda y, t: y.sum())
x = torch.randn(m * 32, 1024)
with em.Counter(stage_mod, count="every") as c:
    for _ in range(6):
        schedule.step(x) if rank == 0 else schedule.step(target=x, losses=[])
        dist.barrier()  # every stage's step ends with the pipeline
        c.step()
steps = c.steps.iloc[1:]  # the first step warms up
print(f"stage {rank}: bubble {statistics.median(steps['bubble_fraction']):.3f} "
      f"(theory {em.pipeline_bubble('gpipe', stages, m):.3f}), waiting for the peer "
      f"{statistics.median(steps['peer_wait_s'] / steps['wall_s']):.3f}, "
      f"step {1e3 * statistics.median(steps['wall_s']):.1f} ms", flush=True)
dist.destroy_process_group()
