"""task: language_model: the shipped tiny GPT learns the standard library's Python on a CPU and
`launch predict` writes text; packing into blocks; tokens/s; a mid-epoch resume is bitwise, and
goes on on another world size; a Hugging Face-style model that computes its own loss from dict
batches evaluates exactly on 2 ranks as in 1 process."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    FIXTURES,
    RECIPES,
    SMALL_LM,
    assert_same_weights,
    final_checkpoint,
    final_weights,
    launch,
    run_dirs,
    run_launch,
    scalars,
)

from launcher import checkpoint
from launcher.config.components import use_import_paths
from launcher.config.loading import load_recipe
from launcher.data import text
from launcher.data.build import build_datasets
from launcher.models.gpt import GPT, sample
from launcher.training.inference import load_model

TINY_LM = RECIPES / "tiny_lm.yaml"
# The recipe's model and data at a size that trains in seconds: for resume and distributed tests.
SMALL = (*SMALL_LM, "model.layers=1", "logging.every_n_steps=2")  # 2 steps of warmup in runs of 6 to 12
BOUND = 2.5  # nats per byte after 200 steps; measured 2.16 to 2.19 (unigram baseline: 3.06)


def test_blocks_pack_the_stream_so_every_byte_after_the_first_is_a_target_once() -> None:
    tokens = text.encode(b"0123456789abcdefghij")  # 20 tokens: (20 - 1) // 4 = 4 blocks of 4
    blocks = text.TokenBlocks(tokens, block_size=4)
    assert len(blocks) == 4
    inputs = torch.cat([blocks[i][0] for i in range(4)])
    targets = torch.cat([blocks[i][1] for i in range(4)])
    assert text.decode(inputs) == "0123456789abcdef"
    assert text.decode(targets) == "123456789abcdefg"
    assert [len(text.TokenBlocks(tokens, 4, blocks=n)) for n in (2, 9)] == [2, 4]  # a spread subset, at most all


def test_python_source_splits_by_module_and_reads_the_running_interpreter() -> None:
    train, val = text.python_source(block_size=64, val_blocks=None)
    assert train.tokens.numel() > text.MIN_CORPUS_BYTES
    train_bytes, val_bytes = bytes(train.tokens.tolist()), bytes(val.tokens.tolist())
    # every 10th module validates: json/decoder (the 20th) is in validation only, by file
    assert b"class JSONDecoder(object):" in val_bytes and b"class JSONDecoder(object):" not in train_bytes
    assert b"class ArgumentParser(" in train_bytes


def test_sampling_continues_the_prompt_with_the_asked_number_of_tokens() -> None:
    torch.manual_seed(0)
    model = GPT(vocab_size=256, block_size=8, width=16, layers=1, heads=2).eval()
    prompt = text.encode("def ")
    out = sample(model, prompt, 20, block_size=8, generator=torch.Generator().manual_seed(1))
    assert len(out) == 24 and torch.equal(out[:4], prompt)
    again = sample(model, prompt, 20, block_size=8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded: the same text


@pytest.mark.slow
def test_tiny_lm_learns_python_below_the_bound_and_predict_writes_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shipped recipe, 200 of its 400 steps (about 30 s on two quiet cores).
    assert launch(TINY_LM, "--cpu", f"run.output={tmp_path}", "train.max_steps=200") == 0
    (run,) = run_dirs(tmp_path, "tiny_lm")
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["step"] == 200
    assert final["val/loss"] < BOUND, final
    assert final["val/perplexity"] == pytest.approx(math.exp(final["val/loss"]), rel=1e-12)
    logged = scalars(run)
    tokens, samples = dict(logged["train/tokens_per_s"]), dict(logged["train/samples_per_s"])
    assert sorted(tokens) == list(range(20, 201, 20))
    for step, rate in tokens.items():  # 128 tokens a block: the same window measured in tokens
        assert rate == pytest.approx(128 * samples[step], rel=1e-5)
    capsys.readouterr()
    assert launch("predict", TINY_LM, "--checkpoint", run, "--prompt", "def ", "task.max_new_tokens=120") == 0
    header, generated = capsys.readouterr().out.split("\n", 1)
    assert header == "==> prompt 1 <=="
    assert generated.startswith("def ") and len(generated.encode()) >= 100  # replacement characters aside
    assert generated.isprintable() or "\n" in generated


@pytest.mark.slow
def test_resume_from_a_mid_epoch_checkpoint_is_bitwise(tmp_path: Path) -> None:
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    # The schedule's length is the recipe's own: the stopped run (max_steps=7) follows the same curve.
    schedule = "scheduler={name: CosineAnnealingLR, interval: step, T_max: 12, eta_min: 0.0003}"
    steps = ("train.max_steps=12", "checkpoint.every_n_steps=5", "logging.every_n_steps=1", schedule)
    assert launch(TINY_LM, "--cpu", f"run.output={straight}", *SMALL, *steps) == 0
    assert launch(TINY_LM, "--cpu", f"run.output={pieces}", *SMALL, *steps, "train.max_steps=7") == 0
    (stopped,) = run_dirs(pieces, "tiny_lm")
    assert final_checkpoint(stopped)["progress"]["batches_done"] == 7  # mid-epoch: thousands of blocks an epoch
    time.sleep(1.1)  # a later second for TensorBoard's event file (see test_regression)
    assert launch(TINY_LM, "--cpu", f"run.output={pieces}", *SMALL, *steps, "--resume", stopped) == 0
    (uninterrupted,) = run_dirs(straight, "tiny_lm")
    a, b = final_checkpoint(uninterrupted)["progress"], final_checkpoint(stopped)["progress"]
    for key in ("best", "best_step"):  # the stopped run also evaluated where it stopped, at step 7
        a.pop(key), b.pop(key)
    assert a == b
    assert_same_weights(final_weights(uninterrupted), final_weights(stopped))
    assert scalars(uninterrupted)["train/loss"] == scalars(stopped)["train/loss"]


@pytest.mark.slow
def test_a_two_rank_run_goes_on_in_one_process(tmp_path: Path) -> None:
    result = run_launch(
        TINY_LM, "--nproc", "2", f"run.output={tmp_path}", *SMALL, "train.max_steps=6", cwd=tmp_path, timeout=None
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(tmp_path, "tiny_lm")
    result = run_launch(
        TINY_LM, "--cpu", f"run.output={tmp_path}", *SMALL, "train.max_steps=10", "--resume", run, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the checkpoint is from 2 rank(s), this run has 1" in result.stdout + result.stderr
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["step"] == 10 and math.isfinite(final["val/loss"])


HF = (
    f"run.import_paths=[{FIXTURES}]", "data.dataset={name: 'hf_style:TokenDicts', block_size: 32}",
    "model={name: 'hf_style:CausalLM'}", "task.model_computes_loss=true", "data.val_fraction=0.2",
    "train.batch_size=8", "eval.batch_size=5", "train.max_steps=6",
)  # fmt: skip


def _two_rank_run(output: Path, *overrides: str) -> tuple[Path, dict, torch.nn.Module, Any]:
    """A short 2-rank run of the small recipe: its folder, final metrics, trained model and validation split."""
    result = run_launch(TINY_LM, "--nproc", "2", f"run.output={output}", *SMALL, *overrides, cwd=output, timeout=None)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(output, "tiny_lm")
    recipe = load_recipe(run / "recipe.yaml")
    use_import_paths(recipe.run.import_paths)
    model, _, trained_with = load_model(recipe, checkpoint.latest(run / "checkpoints"), torch.device("cpu"))
    val = build_datasets(recipe.data, seed=trained_with["train"]["seed"], classes=False).val
    return run, json.loads((run / "metrics.json").read_text())["final"], model, val


@pytest.mark.slow
def test_a_model_computing_its_own_loss_from_dict_batches_evaluates_alike_on_two_ranks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, final, model, val = _two_rank_run(tmp_path, *HF)
    # By hand, in one process: the mean loss over every predicted token of the validation split.
    blocks = torch.stack([val[i]["input_ids"] for i in range(len(val))])
    with torch.no_grad():
        logits = model(blocks)["logits"]
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1).double(), blocks[:, 1:].flatten(), reduction="mean")
    assert len(val) % 2 == 1  # an odd count: the ranks' shards differ, and none is counted twice
    assert final["val/loss"] == pytest.approx(float(expected), rel=1e-5)
    capsys.readouterr()
    assert launch("eval", run / "recipe.yaml", "--checkpoint", run) == 0
    single = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert float(single["val/loss"]) == pytest.approx(final["val/loss"], abs=1e-6)  # printed with 6 decimals
    assert launch("predict", run / "recipe.yaml", "--checkpoint", run, "--prompt", "import") == 0
    printed = capsys.readouterr().out
    assert printed.startswith(("prompt 1\timport", "==> prompt 1 <==\nimport")), printed


@pytest.mark.slow
def test_a_recipe_named_collate_fn_pads_lines_and_padding_is_not_counted(tmp_path: Path) -> None:
    lines = (
        f"run.import_paths=[{FIXTURES}]", "data.dataset={name: 'hf_style:Lines'}", "data.collate_fn=hf_style:pad",
        "model={name: 'hf_style:CausalLM', block_size: 48}", "task.model_computes_loss=true",
        "train.batch_size=8", "eval.batch_size=6", "train.max_steps=6", "data.num_workers=1",
    )  # fmt: skip
    _, final, model, val = _two_rank_run(tmp_path, *lines)
    total, tokens = 0.0, 0
    with torch.no_grad():  # line by line, unpadded: the mean loss per predicted byte
        for i in range(len(val)):
            line = val[i]["input_ids"].unsqueeze(0)
            logits = model(line)["logits"][0, :-1].double()
            total += float(F.cross_entropy(logits, line[0, 1:], reduction="sum"))
            tokens += line.shape[1] - 1
    assert final["val/loss"] == pytest.approx(total / tokens, rel=1e-5)
