"""The `launch` command: what runs, and where.

    launch RECIPE [key.sub=value ...] [--cpu] [--resume [PATH]] [--dry-run]
    launch check RECIPE [key.sub=value ...]
    launch eval RECIPE --checkpoint PATH [key.sub=value ...]
    launch predict RECIPE --checkpoint PATH FILE... [key.sub=value ...]
    launch schema

Flags say where and how a run goes; what it trains is in the recipe, and any recipe key can be
overridden after it as key.sub=value (command line > recipe file > defaults).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from launcher import components
from launcher.errors import UserError
from launcher.recipe import Recipe, RecipeError, dump_recipe, is_override, json_schema, load_recipe

log = logging.getLogger("launcher")

COMMANDS = ("train", "check", "eval", "predict", "schema")
USAGE_ERROR = 2


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch" if command == "train" else f"launch {command}",
        description=__doc__ if command == "train" else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: any recipe key as key.sub=value, the value read as YAML (train.epochs=4, scheduler=null).",
    )
    if command == "schema":
        return parser
    parser.add_argument("recipe", help="the recipe (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU in one process, even where GPUs exist")
    if command == "train":
        parser.add_argument(
            "--resume", nargs="?", const="latest", metavar="PATH",
            help="continue the latest run of this recipe, or the run folder or checkpoint PATH",
        )  # fmt: skip
        parser.add_argument("--dry-run", action="store_true", help="same as `launch check`: validate, build, one step")
    if command in ("eval", "predict"):
        parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint file (.pt)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from launcher import logs

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    args = _parser(command).parse_intermixed_args(argv)
    if getattr(args, "resume", None) and is_override(args.resume):  # `--resume key=value`: no PATH was given
        args.overrides.append(args.resume)
        args.resume = "latest"
    logs.setup_text_log(None, console=True)
    try:
        if command == "schema":
            print(json.dumps(json_schema(), indent=2))
            return 0
        files = [o for o in args.overrides if not is_override(o)] if command == "predict" else []
        overrides = [o for o in args.overrides if o not in files]
        if command == "predict" and not files:
            raise UserError("launch predict: name at least one image or CSV file to predict")
        recipe = load_recipe(args.recipe, overrides, check=components.problems_in)
        if command == "check" or getattr(args, "dry_run", False):
            return check(recipe)
        if command == "eval":
            return evaluate(recipe, args.checkpoint, args.cpu)
        if command == "predict":
            return predict(recipe, args.checkpoint, files, args.cpu)
        return train(recipe, args.recipe, args.cpu, args.resume)
    except RecipeError as error:
        log.error("error: %s", error)
        return USAGE_ERROR
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except (UserError, FileNotFoundError) as error:
        log.error("error: %s", error)
        return 1
    except Exception:
        log.exception("error: the run failed; the traceback follows")
        return 1
    finally:
        logs.close_text_log()


def train(recipe: Recipe, recipe_path: str, force_cpu: bool, resume: str | None) -> int:
    from launcher import logs, rundir
    from launcher.runtime import single_process
    from launcher.train import train as run_training

    runtime = single_process(force_cpu)
    resume_from = None
    if resume is not None:
        run, resume_from = rundir.find_resume(None if resume == "latest" else resume, recipe.run.output, recipe.run.name)
    else:
        run = rundir.new_run_dir(recipe.run.output, recipe.run.name)
    logs.setup_text_log(run.log_file, console=runtime.is_main)
    dump_recipe(recipe, run.recipe, header=f"# resolved from {recipe_path}; run it again with: launch {run.recipe}\n")
    log.info("run folder: %s", run.path)
    log.info("TensorBoard: tensorboard --logdir %s", run.tensorboard(recipe.logging.tensorboard_dir))
    summary = run_training(recipe, runtime, run, resume_from)
    final, best = summary["final"], summary["best"]
    log.info("done in %.1f s: %s", summary["wall_time_s"], "  ".join(f"{k} {v:.4f}" for k, v in final.items() if "/" in k))
    if best and best["value"] is not None:
        log.info("best %s %.4f at step %d: %s", best["metric"], best["value"], best["step"], run.checkpoints / "best.pt")
    log.info("checkpoints: %s", run.checkpoints)
    log.info("metrics: %s", run.metrics)
    return 0


def check(recipe: Recipe) -> int:
    """Validate, build the data and the model, run one forward/backward step, and say what was built."""
    import torch
    import yaml

    from launcher.data import build_datasets, train_loader
    from launcher.models import build_model, count_parameters
    from launcher.optim import build_loss, build_optimizer

    started = time.perf_counter()
    print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
    data = build_datasets(recipe.data, seed=recipe.train.seed)
    model = build_model(recipe.model, data.info)
    build_optimizer(recipe.optimizer, model.parameters())
    loader = train_loader(
        data.train, recipe.data.model_copy(update={"num_workers": 0}), batch_size=recipe.train.batch_size,
        drop_last=False, seed=recipe.train.seed, rank=0, world_size=1, pin=False,
    )  # fmt: skip
    inputs, targets = next(iter(loader))
    outputs = model(inputs)
    loss = build_loss(recipe.loss)(outputs, targets)
    loss.backward()
    total, trainable = count_parameters(model)
    print(f"# data: {len(data.train)} training / {len(data.val)} validation samples, {data.info.num_classes} classes")
    print(f"# model: {recipe.model.name}, {total:,} parameters ({trainable:,} trainable)")
    print(f"# one batch: inputs {_shape(inputs)}, targets {_shape(targets)}, outputs {_shape(outputs)}")
    print(f"# one forward/backward step: loss {loss.item():.4f}, finite: {bool(torch.isfinite(loss))}")
    print(f"# ok in {time.perf_counter() - started:.1f} s")
    return 0


def _shape(tensor: object) -> str:
    return f"{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}" if hasattr(tensor, "shape") else type(tensor).__name__


def evaluate(recipe: Recipe, checkpoint_path: Path, force_cpu: bool) -> int:
    from launcher.inference import evaluate_checkpoint
    from launcher.runtime import single_process

    metrics = evaluate_checkpoint(recipe, checkpoint_path, single_process(force_cpu).device)
    for name, value in metrics.items():
        print(f"{name} {value:.4f}")
    return 0


def predict(recipe: Recipe, checkpoint_path: Path, files: list[str], force_cpu: bool) -> int:
    from launcher.inference import predict as run_predict
    from launcher.runtime import single_process

    for what, name, probability in run_predict(recipe, checkpoint_path, files, single_process(force_cpu).device):
        print(f"{what}\t{name}\t{probability:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
