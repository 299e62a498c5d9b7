"""Benchmark (b)+(c) of issue 2: Π_r over a Llama-3.1-8B-shaped checkpoint pair, exact vs randomized SVD.

Writes two random bf16 checkpoints shaped like Llama-3.1-8B's targeted weights (32 layers × q,k,v,o,gate,
up,down; hidden 4096, kv 1024, MLP 14336) as safetensors shards, the new one = old + a low-rank "release"
component + small full-rank noise. Then times `compute_projection` (reading included) with randomized and
exact SVD, compares their reconstructions, and records peak host RSS and peak GPU memory.

    python bench/worker/bench_projection.py --out results.json            # the full 8B shape (GPU)
    python bench/worker/bench_projection.py --layers 2 --scale 0.125      # a quick CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from relora_worker.config import ProjectionConfig
from relora_worker.project import compute_projection

SHAPES = {  # module: (d_out, d_in) for Llama-3.1-8B
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (1024, 4096),
    "self_attn.v_proj": (1024, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (14336, 4096),
    "mlp.up_proj": (14336, 4096),
    "mlp.down_proj": (4096, 14336),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_pair(root: Path, layers: int, scale: float, device: torch.device) -> tuple[Path, Path, int]:
    """Writes old/ and new/ checkpoints, one shard per layer; returns their paths and bytes per checkpoint."""
    old_dir, new_dir = root / "old", root / "new"
    old_dir.mkdir(parents=True)
    new_dir.mkdir(parents=True)
    generator = torch.Generator(device=device).manual_seed(0)
    total = 0
    for layer in range(layers):
        old, new = {}, {}
        for module, (d_out, d_in) in SHAPES.items():
            d_out, d_in = max(8, int(d_out * scale)), max(8, int(d_in * scale))
            w = 0.02 * torch.randn(d_out, d_in, generator=generator, device=device)
            low_rank = (
                torch.randn(d_out, 32, generator=generator, device=device)
                @ torch.randn(32, d_in, generator=generator, device=device)
            ) * 2e-4
            noise = 2e-4 * torch.randn(d_out, d_in, generator=generator, device=device)
            key = f"model.layers.{layer}.{module}.weight"
            old[key] = w.to(torch.bfloat16).cpu()
            new[key] = (w + low_rank + noise).to(torch.bfloat16).cpu()
            total += old[key].numel() * 2
        save_file(old, str(old_dir / f"model-{layer:05d}.safetensors"))
        save_file(new, str(new_dir / f"model-{layer:05d}.safetensors"))
    return old_dir, new_dir, total


def drop_page_cache() -> bool:
    """Best effort: makes the timed read come from disk rather than memory (needs root)."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed_projection(old: Path, new: Path, svd: str, rank: int) -> tuple[float, object, bool]:
    cold = drop_page_cache()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    projection = compute_projection(old, new, TARGETS, ProjectionConfig(rank=rank, svd=svd))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, projection, cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (32 for Llama-3.1-8B)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every dimension (quick checks)")
    parser.add_argument("--rank", type=int, default=16, help="projection rank")
    parser.add_argument("--exact-layers", type=int, default=32, help="layers also projected with exact SVD")
    parser.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--out", default="projection-bench.json", help="raw results (JSON)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="relora-proj-bench-"))
    started = time.perf_counter()
    old, new, size = write_pair(root / "full", args.layers, args.scale, device)
    write_seconds = time.perf_counter() - started
    results: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "layers": args.layers,
        "scale": args.scale,
        "rank": args.rank,
        "bytes_per_checkpoint": size,
        "write_seconds": write_seconds,
        "runs": {},
    }
    for svd in ("randomized", "exact"):
        if svd == "exact" and args.exact_layers < args.layers:
            # Exact SVD of the full model may not fit the time budget: project a prefix of the layers.
            sub_old, sub_new = root / "sub" / "old", root / "sub" / "new"
            for src, dst in ((old, sub_old), (new, sub_new)):
                dst.mkdir(parents=True, exist_ok=True)
                for layer in range(args.exact_layers):
                    os.link(src / f"model-{layer:05d}.safetensors", dst / f"model-{layer:05d}.safetensors")
            seconds, projection, cold = timed_projection(sub_old, sub_new, svd, args.rank)
        else:
            seconds, projection, cold = timed_projection(old, new, svd, args.rank)
        results["runs"][svd] = {
            "seconds": seconds,
            "modules": len(projection.factors),
            "cold_read": cold,
            "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
            "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "mean_relative_error": sum(m["relative_error"] for m in projection.meta["modules"].values())
            / len(projection.meta["modules"]),
        }
        results[f"_{svd}"] = projection
    exact, randomized = results.pop("_exact"), results.pop("_randomized")
    gaps, excess = [], []
    for key, (b_exact, a_exact) in exact.factors.items():
        b_rand, a_rand = randomized.factors[key]
        reference = (b_exact @ a_exact).float()
        gaps.append(
            (torch.linalg.matrix_norm(b_rand @ a_rand - reference) / torch.linalg.matrix_norm(reference)).item()
        )
        excess.append(
            randomized.meta["modules"][key]["residual_norm"] / exact.meta["modules"][key]["residual_norm"] - 1
        )
    results["randomized_vs_exact"] = {
        "modules_compared": len(gaps),
        "max_relative_difference_of_approximations": max(gaps),
        "mean_relative_difference_of_approximations": sum(gaps) / len(gaps),
        "max_excess_residual_over_exact": max(excess),
        "mean_excess_residual_over_exact": sum(excess) / len(excess),
    }
    results["total_seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1))
    for svd, run in results["runs"].items():
        print(
            f"{svd:>10}: {run['seconds']:.1f} s for {run['modules']} modules; peak GPU "
            f"{(run['peak_gpu_bytes'] or 0) / 2**30:.2f} GiB; "
            f"peak host RSS {run['peak_host_rss_bytes'] / 2**30:.2f} GiB;"
            f" cold read {run['cold_read']}"
        )


if __name__ == "__main__":
    main()
