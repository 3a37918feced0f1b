"""bench/RESULTS-gpu.md from bench/gpu.sh's results.json: the throughput of each contender, the
language model's MFU, then bench/run.py's tables.

    python -m bench.gpu_report bench/gpu/results.json > bench/RESULTS-gpu.md

MFU (model FLOPs utilization): the model's FLOPs a token times tokens/s, over the GPUs' peak
dense bf16 FLOP/s. FLOPs a token, as nanoGPT and PaLM count them: 6 x the parameters (the
position embedding left out) for the forward and the backward, plus 12 x layers x width x block
for attention's scores and weighted sums. The peaks are NVIDIA's datasheet figures for the GPUs
in PEAK_BF16; for any other GPU no MFU is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.workloads import WORKLOADS, model  # noqa: E402
from launcher.models.gpt import GPT  # noqa: E402

# Dense (no sparsity) bf16 tensor-core FLOP/s, by a part of the name torch gives the GPU; the first match counts.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def peak_flops(gpu_name: str) -> float | None:
    return next((flops for key, flops in PEAK_BF16 if key in gpu_name), None)


def flops_per_token(workload: str) -> float:
    """A language model's training FLOPs a token (the module docstring says how they are counted)."""
    gpt, block = model(workload), WORKLOADS[workload].block_size or 0
    assert isinstance(gpt, GPT), workload
    parameters = sum(p.numel() for p in gpt.parameters()) - gpt.position_embedding.weight.numel()
    layers, width = len(gpt.blocks), gpt.token_embedding.embedding_dim
    return 6.0 * parameters + 12 * layers * width * block


def throughput_table(results: dict) -> list[str]:
    """Per contender: the median step, the global throughput from it (images/s, tokens/s), per
    GPU, the MFU (language models on a GPU of PEAK_BF16), the step over the plain script's (DDP,
    eager) and, for `launch`, over the plain script's of the same kind (-fsdp, -compile)."""
    nproc, gpus = results["nproc"], results["machine"]["gpus"]
    peak = peak_flops(gpus[0]) if gpus and results.get("gpu") else None
    lines = [
        "| workload | contender | step (ms) | throughput | per GPU | MFU | x plain | launch / plain, same kind | 1st step (s) | peak memory, rank 0 (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cells = report.summary(results["runs"])
    for (workload, contender), cell in cells.items():
        if cell["step_ms"] is None:
            lines.append(f"| {workload} | {contender} | failed | | | | | | | |")
            continue
        w, step_s = WORKLOADS[workload], cell["step_ms"][0] / 1000
        per_step = w.batch_size * nproc * (w.block_size or 1)
        unit = "tokens/s" if w.block_size else "images/s"
        mfu = per_step / step_s * flops_per_token(workload) / (peak * nproc) if peak and w.block_size else None
        versus_plain = report.paired_ratio(results["runs"], workload, contender)
        counterpart = contender.replace("launch", "plain")
        ratio = report.paired_ratio(results["runs"], workload, contender, reference=counterpart)
        row = [
            workload,
            contender,
            f"{cell['step_ms'][0]:.1f}",
            f"{per_step / step_s:,.0f} {unit}",
            f"{per_step / step_s / nproc:,.0f}",
            f"{mfu:.1%}" if mfu is not None else "-",
            f"{versus_plain:.3f}" if versus_plain is not None and contender != "plain" else "",
            f"{ratio:.3f}" if ratio is not None and counterpart != contender else "",
            f"{cell['step_one_s'][0]:.1f}",
            f"{cell['peak_memory_mb'][0]:,.0f}" if cell["peak_memory_mb"] else "-",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(results: dict) -> str:
    m, nproc, gpus = results["machine"], results["nproc"], results["machine"]["gpus"]
    where = (
        f"{nproc} x {gpus[0]}, NCCL"
        if results.get("gpu") and gpus
        else f"DRY RUN on the CPU ({m['cpu']}, {nproc} gloo processes, shrunk models, a few steps): the figures mean nothing"
    )
    peak = peak_flops(gpus[0]) if gpus and results.get("gpu") else None
    lines = [
        "# GPU benchmark results (bench/gpu.sh)",
        "",
        f"{m['date']} · {where} · torch {m['torch']} · {nproc} process(es) per contender, 1 repetition · "
        f"the suite took {results['suite_s']:.0f} s",
        "",
        "G1: ResNet-50, bf16 autocast, channels_last (not under FSDP2, which shards no channels_last parameter),",
        "batch 64 per GPU; G2: a GPT of width 512, 8 blocks, 512 tokens a block, bf16, batch 32 blocks per GPU",
        "(bench/workloads.py). DDP unless named: -fsdp, FSDP2 (each block a unit, then the root; bf16 parameters,",
        "fp32 reduction); -compile, torch.compile with DDP, cold (every run compiles from an empty cache). With one",
        "GPU, `launch` trains without DDP or FSDP, the plain script in a world of one. Throughput from the median",
        "step; 1st step: its batch in hand to its end (torch.compile compiles there). MFU: "
        + (f"over {peak / 1e12:.0f} TFLOP/s of dense bf16 per GPU." if peak else "none (no known peak for this GPU)."),
        "",
        *throughput_table(results),
        "",
    ]
    # bench/run.py's own tables below, under a heading of their own.
    tables = report.markdown(results).split("\n", 1)[1]
    return "\n".join(lines) + "\n# bench/run.py's tables\n" + tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="results.json of bench/run.py")
    print(markdown(json.loads(parser.parse_args().results.read_text())))


if __name__ == "__main__":
    main()
