"""Data-parallel LoRA training under torchrun: one process per device, DDP, rank 0 writes.

The recommended entry point is the workflow itself: `python main.py run train.json --nproc N`
(cli_distributed.py) runs a training graph in N processes, each taking its slice of every global
batch. This module trains from a saved dataset without a graph, and its `setup` joins the process
group for both:

    torchrun --nproc_per_node 2 -m models.training.distributed \\
        --model weights/diffusion_models/flux1-dev.safetensors --dataset output/datasets/my_set \\
        --config train.json --out output/loras/my_lora

`--dataset` is a folder written by SaveTrainingDataset (safetensors shards); `--config` a JSON
object of `TrainConfig` fields (batch_size is per process: the global batch is batch_size x world
size). The process group uses NCCL on CUDA and gloo on CPU. Rank 0 writes
`<out>_<steps>_steps.safetensors`, its `.state.safetensors` and `<out>_loss.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .config import TrainConfig
from .data import Sample, TrainingData, load_shards
from .loop import train

log = logging.getLogger(__name__)


def samples_from_records(records: Sequence[Any]) -> list[Sample]:
    """Dataset records as SaveTrainingDataset writes them ({"latent": LATENT, "conditioning": COND})."""
    out = []
    for record in records:
        samples, masks = record["latent"]["samples"], record["latent"].get("loss_mask")
        conds = record["conditioning"]
        for i in range(samples.shape[0]):
            context, options = conds[i] if len(conds) == samples.shape[0] else conds[0]
            out.append(
                Sample(
                    samples[i].float(),
                    context[0].float(),
                    options["pooled_output"].reshape(-1).float(),
                    None if masks is None else masks[i, 0],
                    options.get("guidance"),
                )
            )
    return out


def setup() -> torch.device:
    """Join the torchrun process group (gloo on CPU, NCCL on CUDA) and pick this rank's device."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path, help="FLUX transformer file or folder")
    parser.add_argument("--dataset", required=True, type=Path, help="SaveTrainingDataset folder")
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    parser.add_argument("--out", required=True, type=Path, help="output path prefix (rank 0 writes)")
    parser.add_argument("--weight-dtype", default="default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [rank %(process)d] %(message)s")
    device = setup()
    try:
        from models.formats.load import load_flux_transformer

        config = TrainConfig.from_json(args.config.read_text()) if args.config else TrainConfig()
        model = load_flux_transformer(args.model, weight_dtype=args.weight_dtype).to(device)
        data = TrainingData(tuple(samples_from_records(load_shards(args.dataset))))
        result = train(model, data, config, checkpoint_dir=args.out.parent, checkpoint_name=args.out.name)
        if dist.get_rank() == 0:
            curve = {"loss": result.state.losses, "world_size": dist.get_world_size()}
            Path(f"{args.out}_loss.json").write_text(json.dumps(curve))
            log.info("trained %d steps on %d processes", result.state.step, dist.get_world_size())
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
