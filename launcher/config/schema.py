"""The recipe: one typed schema, its defaults, loading and command-line overrides.

Precedence, written down once: command line (`key.sub=value`) > recipe file > the defaults below.

Component sections (`data.dataset`, `model`, `loss`, `optimizer`, `scheduler`, each transform)
hold a `name` plus the keyword arguments of what it names, flat beside it, so that
`optimizer.lr=0.1` overrides the learning rate. Those arguments are checked against the
signature of the resolved callable by `launcher.config.components`, not here.
"""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    NonNegativeInt,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from launcher.config.durations import time_limit_minutes


class Section(BaseModel):
    """A recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


# The key under which a component's keyword arguments may also be given, for the arguments whose
# names the section uses itself: `name` (Hugging Face's `load_dataset(name=...)`), `weights`,
# `interval`... The keys beside `name` and those under `kwargs:` are passed together.
EXPLICIT_KWARGS = "kwargs"


def component_arguments(spec: dict[str, Any], own_keys: typing.Collection[str]) -> dict[str, Any]:
    """The keyword arguments of a component given as raw recipe data: its keys other than the
    section's own (`own_keys`: `name`, ...), plus the entries of its `kwargs:` mapping."""
    arguments = {key: value for key, value in spec.items() if key not in own_keys and key != EXPLICIT_KWARGS}
    explicit = spec.get(EXPLICIT_KWARGS)
    return {**arguments, **explicit} if isinstance(explicit, dict) else arguments


class Component(BaseModel):
    """A component by name plus the keyword arguments of what it names."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="A built-in name, a name from torch/torchvision, or 'module:attribute'.")

    @model_validator(mode="after")
    def _explicit_kwargs_are_a_mapping(self) -> Component:
        extra = self.model_extra or {}
        explicit = extra.get(EXPLICIT_KWARGS, {})
        if not isinstance(explicit, dict) or not all(isinstance(key, str) for key in explicit):
            raise ValueError(f"{EXPLICIT_KWARGS}: a mapping of argument names to values, got {explicit!r}")
        twice = sorted(set(explicit) & set(extra))
        if twice:
            raise ValueError(f"{', '.join(twice)}: given both beside 'name' and under '{EXPLICIT_KWARGS}:'; keep one")
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of what `name` names (see EXPLICIT_KWARGS)."""
        return component_arguments(self.model_extra or {}, ())


def _component_shorthand(value: Any) -> Any:
    # `- ToTensor` in a transform list means `- {name: ToTensor}`.
    return {"name": value} if isinstance(value, str) else value


class DatasetSpec(Component):
    """`digits`, `csv`, `ImageFolder`, a torchvision dataset (`MNIST`, `CIFAR10`...) or `module:attr`."""


class Transforms(Section):
    train: list[Component] = Field(default_factory=list, description="torchvision transforms, composed in order.")
    val: list[Component] = Field(default_factory=list, description="Transforms for validation and prediction.")

    @field_validator("train", "val", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return [_component_shorthand(v) for v in value] if isinstance(value, list) else value


class Data(Section):
    dataset: DatasetSpec
    transforms: Transforms = Field(default_factory=Transforms)
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (seeded) when the dataset has no validation split of its own."
    )
    val_split_name: str = Field("test", description="For datasets taking `split=`: the split used for validation.")
    classes: list[str] | None = Field(None, description="Class names, where the dataset does not say them.")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes (per training process).")
    collate_fn: str | None = Field(
        None, description="'module:attribute': your function making a list of samples into a batch (padding "
        "sequences, building dicts...); default: torch's default_collate.",
    )  # fmt: skip
    pin_memory: bool | None = Field(None, description="Pin host memory; default: on when training on CUDA.")


class Model(Component):
    """A built-in (`mlp`, `small_cnn`), a torchvision model name, or `module:attr`."""

    weights: str | None = Field(
        None,
        description="Pretrained torchvision weights ('DEFAULT', 'IMAGENET1K_V1'...): downloaded once, then cached.",
    )
    freeze: list[str] = Field(
        default_factory=list, description="fnmatch patterns of parameter names to freeze ('*' = the whole backbone)."
    )
    replace_head: bool | None = Field(
        None, description="Replace the last Linear layer to fit the number of classes; default: when `weights` is set."
    )
    activation_checkpointing: list[str] = Field(
        default_factory=list,
        description="Class names of submodules (TransformerBlock ...) whose activations are recomputed in the backward "
        "pass instead of kept: less memory, about one more forward pass of them per step.",
    )


class Loss(Component):
    name: str = "CrossEntropyLoss"


_NDIM = {"type": "integer", "minimum": 0}


class ParamGroup(BaseModel):
    """Parameters chosen by name and/or by dimension, with optimizer arguments of their own
    (`weight_decay: 0.0`, `lr: ...`) beside the choosers, as torch's own parameter groups hold them."""

    model_config = ConfigDict(extra="allow")

    params: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of parameter names ('*.bias', '*norm*'), as model.freeze takes them.",
    )
    # A list inside, `ndim: 1` read as [1]: one type, so that a wrong value gets one message at
    # one path (a union reports one per member); the JSON Schema still offers editors both forms.
    ndim: typing.Annotated[
        list[NonNegativeInt] | None,
        WithJsonSchema({"anyOf": [_NDIM, {"type": "array", "items": _NDIM}, {"type": "null"}]}),
    ] = Field(
        None,
        description="The parameters' number of dimensions: 1 for vectors (biases, norm weights), [0, 1] with scalars.",
    )

    @field_validator("ndim", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _chooses_something(self) -> ParamGroup:
        if not self.params and self.ndim is None:
            raise ValueError("a parameter group chooses its parameters: give params (name patterns), ndim, or both")
        return self

    @property
    def dims(self) -> set[int] | None:
        """The dimensions chosen, or None where any will do."""
        return None if self.ndim is None else set(self.ndim)

    @property
    def options(self) -> dict[str, Any]:
        """The optimizer arguments of this group's own."""
        return dict(self.model_extra or {})


class Optimizer(Component):
    name: str = "AdamW"
    # None rather than []: a run folder's recipe.yaml from before parameter groups (no such key)
    # then reads as the same optimizer, and resumes without --force.
    param_groups: list[ParamGroup] | None = Field(
        None,
        description="Parameter groups with arguments of their own (weight_decay: 0.0 ...): each parameter joins the first "
        "group that chooses it; the rest take the optimizer's own arguments. Frozen parameters join none.",
    )


class Scheduler(Component):
    """A torch.optim.lr_scheduler schedule (or `module:attr`). An argument given as {name: ...}, or
    a list of them (SequentialLR's and ChainedScheduler's `schedulers`), is a schedule itself,
    built on the same optimizer."""

    interval: Literal["step", "epoch"] = Field(
        "epoch", description="Step the schedule after every optimizer step or after every epoch."
    )

    @model_validator(mode="after")
    def _plateau_is_per_epoch(self) -> Scheduler:
        if self.name == "ReduceLROnPlateau" and self.interval == "step":
            raise ValueError(
                "ReduceLROnPlateau steps on the validation loss, after each evaluation: use interval: epoch"
            )
        return self


class CompileOptions(Section):
    """torch.compile's keyword arguments (see its documentation): `train.compile: {mode: ..., dynamic: ...}`."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = Field(
        None, description="torch.compile's mode: how much compile time buys speed (default: 'default')."
    )
    dynamic: bool | None = Field(
        None, description="Shapes: true, symbolic from the start; false, a recompilation for each new shape; "
        "null, static first and symbolic where a shape changes (a shorter last batch, evaluation's batch size).",
    )  # fmt: skip
    fullgraph: bool = Field(False, description="Fail on a graph break instead of running that part eagerly.")
    backend: str = Field("inductor", description="A torch.compile backend: inductor, aot_eager, eager ...")
    options: dict[str, Any] | None = Field(
        None, description="Inductor settings by their torch._inductor.config names; not with mode."
    )

    @model_validator(mode="after")
    def _mode_or_options(self) -> CompileOptions:
        if self.mode is not None and self.options is not None:
            raise ValueError("give mode or options, not both (torch.compile takes one of them)")
        return self


# `train.compile` reads true as torch.compile's defaults and false as None: one type inside, so that a
# wrong value gets one message at one path (a union reports one per member); editors are offered both.
_COMPILE_JSON_SCHEMA = {"anyOf": [{"type": "boolean"}, CompileOptions.model_json_schema()]}


class Train(Section):
    epochs: int | None = Field(
        None,
        ge=1,
        description="Epochs to train (10 when neither this nor max_steps is set); training stops at whichever comes first.",
    )
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to train.")
    batch_size: int = Field(64, ge=1, description="Batch size per process.")
    grad_accum_steps: int = Field(1, ge=1, description="Batches accumulated into one optimizer step.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Mixed precision: bf16 on CPU or CUDA, fp16 (with loss scaling) on CUDA only."
    )
    channels_last: bool = Field(
        False, description="Model and image batches in the channels-last (NHWC) memory layout: faster convolutions on "
        "GPUs with tensor cores, with bf16 or fp16. Under FSDP the batches only (FSDP2 shards contiguous parameters).",
    )  # fmt: skip
    compile: typing.Annotated[CompileOptions | None, WithJsonSchema(_COMPILE_JSON_SCHEMA)] = Field(
        None, description="torch.compile the model (true, or torch.compile's options): faster steps after a first one "
        "that compiles; the compiled code is cached in the run folder (compile_cache/) for a resumed or requeued run.",
    )  # fmt: skip
    seed: int = 0
    drop_last: bool = Field(True, description="Drop the last incomplete training batch of each epoch.")
    deterministic: bool = Field(
        False, description="torch.use_deterministic_algorithms, deterministic cuDNN and cuBLAS: the same numbers on every "
        "run on GPUs too, at some speed; an operation with no deterministic version then fails, naming itself.",
    )  # fmt: skip
    reuse_freed_memory: bool = Field(
        True, description="Keep freed host memory for the next step (glibc malloc on Linux) instead of returning it to "
        "the system and faulting it back in every step: fewer page faults, at the price of keeping the peak memory.",
    )  # fmt: skip

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_on_or_off(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return CompileOptions() if value else None
        if value is not None and not isinstance(value, dict | CompileOptions):
            raise ValueError(f"true, false, or a mapping of torch.compile's options (mode, dynamic ...), got {value!r}")
        return value

    @field_serializer("compile")
    def _compile_off_is_false(self, value: CompileOptions | None) -> dict[str, Any] | bool:
        return False if value is None else value.model_dump()

    @model_validator(mode="after")
    def _has_a_length(self) -> Train:
        if self.epochs is None and self.max_steps is None:
            self.epochs = 10
        return self


# The built-in tasks: the metrics they measure where eval.metrics is left out, and the metric
# best.pt follows by default. A user's task (`module:attr`) gives its own at setup.
BUILTIN_TASKS: dict[str, tuple[tuple[str, ...], str]] = {
    "classification": (("acc1", "acc5"), "val/acc1"),
    "regression": (("mae", "rmse", "r2"), "val/loss"),
    "language_model": (("perplexity",), "val/loss"),
}
# Metrics better when lower; every other metric is better when higher, unless it says otherwise
# itself (a torchmetrics metric's `higher_is_better`: a user's `module:attr` one, looked up where
# it is built).
LOWER_IS_BETTER = frozenset({"loss", "mae", "mse", "rmse", "perplexity"})
METRIC_NAME = re.compile(r"[A-Za-z_]\w*|[\w.]+:[\w.]+")


def metric_tag(name: str) -> str:
    """How a metric is logged: val/<name>, a `module:attr` one under its attribute's name."""
    return f"val/{name.rpartition(':')[2]}"


def metric_names(metrics: typing.Iterable[str]) -> list[str]:
    """What an evaluation measuring `eval.metrics` logs: val/loss, then each metric's tag."""
    return ["val/loss", *map(metric_tag, metrics)]


def default_mode(metric: str, higher_is_better: bool | None = None) -> Literal["max", "min"]:
    """The direction of a metric no `mode` is given for: the metric's own word where it has one
    (`higher_is_better`, a torchmetrics metric's attribute); else min for a loss (any metric
    named with "loss"), an error or a perplexity (val/mae, ...), max for the rest."""
    if higher_is_better is not None:
        return "max" if higher_is_better else "min"
    name = metric.rpartition("/")[2]
    return "min" if name in LOWER_IS_BETTER or "loss" in name else "max"


class TaskSpec(Component):
    """What a batch's loss and the evaluation's metrics are: `classification` (the default),
    `regression`, `language_model`, or the user's own (`module:attr`, a launcher Task)."""

    name: str = Field(
        "classification", description="classification, regression, language_model, or 'module:attribute' (your Task)."
    )


class Eval(Section):
    every_n_epochs: int = Field(1, ge=1)
    batch_size: int | None = Field(None, ge=1, description="Default: train.batch_size.")
    metrics: list[str] | None = Field(
        None,
        description="Besides the loss: acc1, acc5, f1_macro, auroc (classification); mae, mse, rmse, r2 (regression); "
        "perplexity (language_model); or 'module:attribute' (a torchmetrics Metric). Default: the task's own "
        "(acc1, acc5; mae, rmse, r2; perplexity). "
        "acc5 only where there are more than 5 classes.",
    )

    @field_validator("metrics")
    @classmethod
    def _metric_names_are_names(cls, metrics: list[str] | None) -> list[str] | None:
        bad = [m for m in metrics or [] if not METRIC_NAME.fullmatch(m)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: a metric is a name such as acc1 or mae, or 'module:attribute'"
            )
        return metrics


class Best(Section):
    metric: str | None = Field(
        None,
        description="A measured metric as logged: val/loss, val/acc1, val/mae... Default: val/acc1 for classification, else val/loss.",
    )
    mode: Literal["max", "min"] | None = Field(
        None,
        description="Default: the metric's own direction where it says one (a module:attribute torchmetrics metric's "
        "higher_is_better), else min for losses, errors and perplexity, max for the rest.",
    )

    @property
    def resolved_metric(self) -> str:
        """`metric`, which the recipe's validator always sets (from the task where the recipe leaves it out)."""
        return self.metric or "val/loss"

    def mode_for(self, higher_is_better: bool | None) -> Literal["max", "min"]:
        """`mode` where the recipe gives one, else the metric's direction (`default_mode`): left
        unset by the validator, since only the metric built at setup knows its `higher_is_better`."""
        return self.mode or default_mode(self.resolved_metric, higher_is_better)


class Checkpoint(Section):
    every_n_epochs: int | None = Field(1, ge=1)
    every_n_steps: int | None = Field(None, ge=1)
    keep_last: int = Field(3, ge=1, description="How many of the newest checkpoints to keep.")
    asynchronous: bool = Field(
        False,
        description="Training waits only for a copy of the state in memory, not for serializing it to a file "
        "(flushing to disk and the checksum happen beside training either way).",
    )
    best: Best | None = Field(default_factory=Best, description="Keep a separate best.pt by this metric (null: none).")


class Profile(Section):
    """torch.profiler on rank 0 over one window of optimizer steps, counted from this process's first."""

    wait: int = Field(5, ge=0, description="Steps before the profiler starts (the first ones compile and warm caches).")
    warmup: int = Field(2, ge=0, description="Steps profiled and thrown away (the profiler's own start-up).")
    active: int = Field(5, ge=1, description="Steps recorded into the trace.")
    memory: bool = Field(False, description="Record tensor allocations too (a larger trace).")
    with_stack: bool = Field(False, description="Record the Python stack of each operator (a larger trace).")


TrackerName = Literal["tensorboard", "csv", "mlflow", "wandb"]
DEFAULT_TRACKERS: list[TrackerName] = ["tensorboard", "csv"]


class Mlflow(Section):
    """Where `trackers: [mlflow]` logs."""

    tracking_uri: str | None = Field(
        None, description="Default: sqlite:///<run.output>/mlflow.db, shared by the runs under run.output."
    )
    experiment: str | None = Field(None, description="Default: run.name (the runs of one recipe are one experiment).")


class Wandb(Section):
    """Where `trackers: [wandb]` logs."""

    project: str | None = Field(None, description="Default: run.name.")
    mode: Literal["online", "offline"] | None = Field(
        None, description="Default: online where logged in (WANDB_API_KEY or `wandb login`), else offline "
        "(the run is kept under <run folder>/wandb/ for `wandb sync`).",
    )  # fmt: skip


class Logging(Section):
    trackers: list[TrackerName] = Field(
        default_factory=lambda: list(DEFAULT_TRACKERS),
        description="Where rank 0 logs: tensorboard (<run folder>/tensorboard), csv (<run folder>/metrics.csv), "
        "mlflow (pip install 'launcher[mlflow]'), wandb (pip install 'launcher[wandb]').",
    )
    mlflow: Mlflow = Field(default_factory=Mlflow)
    wandb: Wandb = Field(default_factory=Wandb)
    tensorboard_dir: str | None = Field(None, description="Default: <run folder>/tensorboard.")
    every_n_steps: int = Field(10, ge=1)
    histograms: bool = Field(False, description="Weight and gradient histograms at the last step of every epoch.")
    image_grid: bool = Field(False, description="An image grid of the first training batch.")
    profile: Profile | None = Field(
        None, description="Profile a window of steps on rank 0 (torch.profiler) into <run folder>/profile: "
        "a trace that Perfetto (ui.perfetto.dev) and TensorBoard's profile plugin open. null: no profiling.",
    )  # fmt: skip


class Fsdp(Section):
    """How `strategy: fsdp` shards the model (torch's FSDP2, `fully_shard`)."""

    shard: list[str] = Field(
        default_factory=list,
        description="Module class names (e.g. TransformerBlock) sharded as units, each gathered only while it runs; "
        "the whole model is sharded as one more unit after them. Empty: the whole model as one unit.",
    )
    reshard_after_forward: bool = Field(
        True, description="Free each unit's gathered parameters after its forward and gather them again for the "
        "backward: less memory, one more all-gather per unit and step.",
    )  # fmt: skip


class Distributed(Section):
    """How several workers cooperate (`launch --gpus N` / `--nproc N`); ignored by a single process."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every worker holds the whole model, gradients are averaged (DistributedDataParallel). "
        "fsdp: parameters, gradients and optimizer state are sharded over the workers (FSDP2), and checkpoints are "
        "sharded folders (torch.distributed.checkpoint), each worker writing its part.",
    )  # fmt: skip
    fsdp: Fsdp = Field(default_factory=Fsdp)

    timeout_s: float = Field(
        300,
        gt=0,
        description="Seconds a worker waits for the others (process-group start, each collective) before failing.",
    )
    stall_s: float | None = Field(
        120, gt=0, description="Seconds without a finished step after which each rank writes every thread's Python stack to its "
        "log (and again as often); keep it below timeout_s, so that a hang is on record before the timeout ends the run. null: never.",
    )  # fmt: skip
    sync_batchnorm: bool = Field(
        False, description="Batch-norm statistics over the global batch (SyncBatchNorm; GPUs only)."
    )
    scale_lr: bool = Field(
        False,
        description="Multiply the learning rate by the number of workers (the linear scaling rule for the global batch).",
    )


class Run(Section):
    name: str | None = Field(None, description="Default: the recipe file's name without .yaml.")
    output: str = Field("runs", description="Run folders go to <output>/<name>/<run-id>/.")
    import_paths: list[str] = Field(
        default_factory=list,
        description="Folders searched for 'module:attr' components (the recipe's folder is added).",
    )

    @property
    def resolved_name(self) -> str:
        """`name`, which load_recipe always sets (to the recipe file's name where the recipe has none)."""
        if self.name is None:
            raise ValueError("run.name is unset: a recipe read by load_recipe always has one")
        return self.name


class Slurm(Section):
    """Where `launch --slurm` submits the run; the command line's flags win over these."""

    nodes: int = Field(1, ge=1, description="Nodes (--nodes).")
    gpus: int | None = Field(None, ge=1, description="GPUs per node, one task on each (--gpus).")
    nproc: int | None = Field(
        None, ge=1, description="CPU tasks per node with gloo, where there are no GPUs (--nproc; default 1)."
    )
    partition: str | None = Field(None, description="Default: the cluster's default partition.")
    time: str | int = Field(
        "1:00:00", description="Time limit in SLURM's forms: minutes, MM:SS, H:MM:SS, D-H, D-H:MM, D-H:MM:SS."
    )
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem: str | None = Field(None, description="Memory per node, e.g. 64G (sbatch --mem).")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per task (sbatch --cpus-per-task).")
    max_requeues: int = Field(
        5, ge=0, description="How many times a preempted or timed-out run is requeued before it stops."
    )
    signal_delay_s: int = Field(
        120,
        ge=0,
        description="SLURM sends USR2 this long before the time limit (at most the limit less 2 minutes; none where that is under 10 s): the run checkpoints and requeues.",
    )
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before the tasks start (module load ..., source ...)."
    )
    sbatch: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="Any other sbatch option, without its dashes (exclusive: true, mail-type: END).",
    )

    @field_validator("time", mode="before")
    @classmethod
    def _slurm_time(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `time: 30` in YAML: minutes, as sbatch reads it
        if isinstance(value, str):
            time_limit_minutes(value)
        return value


DOTTED_KEY = re.compile(r"[A-Za-z_]\w*(\.\w+)*")


def sweep_key_problem(key: str) -> str | None:
    """Why `key` cannot be varied by a sweep, or None."""
    if not DOTTED_KEY.fullmatch(key):
        return f"'{key}' is not a dotted recipe key such as optimizer.lr or train.batch_size"
    if key in ("run", "sweep", "run.name", "run.output") or key.startswith(("sweep.", "run.name.", "run.output.")):
        return f"'{key}': a sweep cannot vary run.name, run.output or sweep: they say where the sweep's runs go"
    return None


# A sweep's grid: each dotted key with the values it takes (`launch sweep` validates the recipe's sweep: by it).
SweepGrid = dict[str, typing.Annotated[list[JsonValue], Field(min_length=1)]]


class Recipe(Section):
    """The whole recipe. Each component gets only its own section."""

    task: TaskSpec = Field(default_factory=TaskSpec)
    data: Data
    model: Model
    loss: Loss = Field(default_factory=Loss)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    scheduler: Scheduler | None = None
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    logging: Logging = Field(default_factory=Logging)
    distributed: Distributed = Field(default_factory=Distributed)
    run: Run = Field(default_factory=Run)
    slurm: Slurm = Field(default_factory=Slurm)
    sweep: SweepGrid = Field(
        default_factory=dict,
        description="What `launch sweep` varies: a dotted recipe key and the values it takes, {optimizer.lr: [0.1, 0.01]}; "
        "one run per combination. A plain `launch` ignores it.",
        json_schema_extra={"propertyNames": {"pattern": f"^{DOTTED_KEY.pattern}$"}},
    )

    @field_validator("task", mode="before")
    @classmethod
    def _task_by_name(cls, value: Any) -> Any:
        return _component_shorthand(value)  # `task: regression`

    @model_validator(mode="after")
    def _defaults_follow_the_task(self) -> Recipe:
        defaults = BUILTIN_TASKS.get(self.task.name)
        if self.eval.metrics is None and defaults is not None:
            self.eval.metrics = list(defaults[0])
        best = self.checkpoint.best
        if best is not None and best.metric is None:
            best.metric = defaults[1] if defaults is not None else "val/loss"
        return self

    @field_validator("sweep")
    @classmethod
    def _sweep_keys_are_dotted_paths(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        problems = [problem for problem in map(sweep_key_problem, grid) if problem]
        if problems:
            raise ValueError("; ".join(problems))
        return grid

    def to_dict(self) -> dict[str, Any]:
        """Plain data with every default filled in: what `recipe.yaml` in a run folder holds."""
        return self.model_dump(mode="json")
