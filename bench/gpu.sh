#!/usr/bin/env bash
# The GPU benchmark in one go, for a machine with NVIDIA GPUs: `launch` against the plain torchrun
# script on every GPU the machine has (nvidia-smi -L), with NCCL, bf16, DDP, FSDP and torch.compile:
# G1 (ResNet-50, channels_last: images/s) and G2 (a GPT of width 512, 8 blocks of 512 tokens:
# tokens/s and MFU). One repetition; at most 8 minutes (runs that would end past 7.5 are left out
# and listed). From the repository root, after `pip install -e .`:
#
#   bash bench/gpu.sh              # writes bench/RESULTS-gpu.md, and bench/gpu/ (results.json, RESULTS.md)
#   bash bench/gpu.sh --dry-run    # the same code paths on the CPU: 2 gloo processes, 8 steps a run,
#                                  # G1 and G2 shrunk (BENCH_DRY=1); writes into a temporary folder
#
# Exits non-zero if a run failed at every try (bench/run.py) or the report could not be written.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python || command -v python3)}
contenders=plain,launch,plain-fsdp,launch-fsdp,plain-compile,launch-compile

if [[ ${1:-} == --dry-run || ${BENCH_GPU_DRY:-0} == 1 ]]; then
    export BENCH_DRY=1
    out=$(mktemp -d -t bench-gpu-dry-XXXXXX)
    where=(--nproc 2 --max-steps 8)
    limits=(--timeout 900)   # inductor compiles ResNet-50 on 2 cores in minutes
    report=$out/RESULTS-gpu.md
else
    gpus=$(nvidia-smi -L | wc -l) || gpus=0
    if ((gpus == 0)); then
        echo "bench/gpu.sh: nvidia-smi lists no GPU here (bash bench/gpu.sh --dry-run runs its code paths on the CPU)" >&2
        exit 1
    fi
    out=bench/gpu
    where=(--gpu --nproc "$gpus")
    # 150 s a run at most (a cold compile of ResNet-50 with its evaluation: about 2 minutes at
    # worst, a guess); no run starts that could end past 450 s.
    limits=(--timeout 150 --deadline 450)
    report=bench/RESULTS-gpu.md
fi

# A run that failed at every try makes bench/run.py exit non-zero after writing its results: the
# report is still written (it says which failed), and this script exits with bench/run.py's status.
mkdir -p "$out"
rm -f "$out/results.json"
status=0
"$python" bench/run.py --workloads g2,g1 --contenders "$contenders" --reps 1 --no-checkpoint --out "$out" \
    "${where[@]}" "${limits[@]}" || status=$?
if [[ ! -f $out/results.json ]]; then
    echo "bench/gpu.sh: bench/run.py ended (exit $status) without writing $out/results.json" >&2
    exit $((status ? status : 1))
fi
"$python" -m bench.gpu_report "$out/results.json" >"$report.partial"
mv "$report.partial" "$report"
echo "bench/gpu.sh: wrote $report"
exit "$status"
