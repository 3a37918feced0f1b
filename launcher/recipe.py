"""The recipe: one typed schema, its defaults, loading and command-line overrides.

Precedence, written down once: command line (`key.sub=value`) > recipe file > the defaults below.

Component sections (`data.dataset`, `model`, `loss`, `optimizer`, `scheduler`, each transform)
hold a `name` plus the keyword arguments of what it names, flat beside it, so that
`optimizer.lr=0.1` overrides the learning rate. Those arguments are checked against the
signature of the resolved callable by `launcher.components`, not here.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator


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


class Loss(Component):
    name: str = "CrossEntropyLoss"


class Optimizer(Component):
    name: str = "AdamW"


class Scheduler(Component):
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
        "GPUs with tensor cores, with bf16 or fp16.",
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

    @model_validator(mode="after")
    def _has_a_length(self) -> Train:
        if self.epochs is None and self.max_steps is None:
            self.epochs = 10
        return self


def _both_accuracies() -> list[Literal["acc1", "acc5"]]:
    return ["acc1", "acc5"]


class Eval(Section):
    every_n_epochs: int = Field(1, ge=1)
    batch_size: int | None = Field(None, ge=1, description="Default: train.batch_size.")
    metrics: list[Literal["acc1", "acc5"]] = Field(
        default_factory=_both_accuracies,
        description="Besides the loss; acc5 only where there are more than 5 classes.",
    )


class Best(Section):
    metric: Literal["val/loss", "val/acc1", "val/acc5"] = "val/acc1"
    mode: Literal["max", "min"] | None = Field(None, description="Default: min for val/loss, max for accuracies.")

    @model_validator(mode="after")
    def _mode_follows_metric(self) -> Best:
        if self.mode is None:
            self.mode = self.resolved_mode
        return self

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        """`mode`, which the validator always sets (from the metric where the recipe leaves it out)."""
        return self.mode or ("min" if self.metric == "val/loss" else "max")


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


class Logging(Section):
    tensorboard_dir: str | None = Field(None, description="Default: <run folder>/tensorboard.")
    every_n_steps: int = Field(10, ge=1)
    histograms: bool = Field(False, description="Weight and gradient histograms at the last step of every epoch.")
    image_grid: bool = Field(False, description="An image grid of the first training batch.")


class Distributed(Section):
    """How several workers cooperate (`launch --gpus N` / `--nproc N`); ignored by a single process."""

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


def time_limit_minutes(text: str | int) -> int:
    """A SLURM time limit in whole minutes (what sbatch --time takes), rounded up; an int is minutes."""
    seconds = slurm_duration_s(text)
    if seconds <= 0:
        raise ValueError(f"'{text}': a time limit must be above zero")
    return -(-seconds // 60)


MAX_MINUTES_OR_SECONDS = 59  # of a SLURM duration's MM and SS fields


def slurm_duration_s(text: str | int) -> int:
    """Seconds in a SLURM duration: minutes, MM:SS, H:MM:SS, D-H, D-H:MM or D-H:MM:SS."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise ValueError(f"'{text}' is not a SLURM time: use minutes, MM:SS, H:MM:SS or D-H:MM:SS")
    days_text, first_text, second_text, third_text = match.groups()
    first = int(first_text)  # the one field the pattern requires
    days, second, third = (int(g) if g else None for g in (days_text, second_text, third_text))
    if any(
        field is not None and field > MAX_MINUTES_OR_SECONDS
        for field in ((second, third) if third is not None or days is not None else (second,))
    ):
        raise ValueError(f"'{text}': minutes and seconds go up to 59")
    if days is not None:  # D-H, D-H:MM, D-H:MM:SS
        return days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    if third is not None and second is not None:  # H:MM:SS (the pattern gives no third field without a second)
        return first * 3600 + second * 60 + third
    if second is not None:  # MM:SS
        return first * 60 + second
    return first * 60  # minutes


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


# --- errors ---------------------------------------------------------------------------------


class Problem(typing.NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RecipeError(Exception):
    """Every problem found in a recipe, each with its dotted path."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun} in the recipe; nothing was run.\n{lines}")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


def dotted(loc: typing.Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _section_class_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that owns the keys at `loc`, to suggest names for an unknown key."""
    cls: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        cls = _model_in(field.annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def problems_from(error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and "[" in part))
        path = dotted(loc)
        if path in seen:  # a union reports one error per member: the first says enough
            continue
        seen.add(path)
        kind = item["type"]
        if kind == "extra_forbidden":
            owner = _section_class_at(loc[:-1])
            hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
            problems.append(Problem(path, f"unknown key{hint}"))
        elif kind == "missing":
            problems.append(Problem(path, "required, but missing"))
        elif kind == "value_error":
            problems.append(Problem(path, item["msg"].removeprefix("Value error, ")))
        else:
            problems.append(Problem(path, f"{item['msg'][0].lower()}{item['msg'][1:]}, got {item['input']!r}"))
    return problems


# --- loading --------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """The safe loader, also reading exponent floats without a dot (1e-3) as numbers, not text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a subclass of SafeLoader


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=4` -> (['train', 'epochs'], 4). The value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError("command line", [Problem(text, "an override is written key.sub=value")])
    try:
        return key.split("."), yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise RecipeError("command line", [Problem(key, f"the value {raw!r} is not valid YAML: {error}")]) from None


def is_override(text: str) -> bool:
    key, sep, _ = text.partition("=")
    return bool(sep) and key.replace(".", "").replace("_", "").isalnum()


def apply_override(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            index = _list_index(node, key, keys[: depth + 1])
            if isinstance(node[index], str):  # `- ToTensor` is `- {name: ToTensor}`
                node[index] = {"name": node[index]}
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise RecipeError(
                "command line", [Problem(".".join(keys[:depth]), f"is {node!r}, not a section with keys")]
            )
        if not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, keys)] = value
    else:
        node[last] = value


def _list_index(node: list[Any], key: str, keys: list[str]) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise RecipeError("command line", [Problem(".".join(keys), f"no item {key} in a list of {len(node)}")])
    return int(key)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise RecipeError(str(path), [Problem("", f"cannot read the recipe: {error.strerror}")]) from None
    try:
        tree = yaml_load(text)
    except yaml.constructor.ConstructorError as error:
        if error.problem_mark is not None and "python/" in str(error.problem):
            line = error.problem_mark.line + 1
            tag = str(error.problem).split("'")[-2] if "'" in str(error.problem) else "a Python tag"
            problem = f"line {line}: the tag {tag.removeprefix('tag:yaml.org,2002:')} is refused: recipes are read as plain data, never as Python objects"
            raise RecipeError(str(path), [Problem("", problem)]) from None
        raise RecipeError(str(path), [Problem("", f"not valid YAML: {error}")]) from None
    except yaml.YAMLError as error:
        raise RecipeError(str(path), [Problem("", f"not valid YAML: {error}")]) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise RecipeError(str(path), [Problem("", f"a recipe is a mapping of sections, got {type(tree).__name__}")])
    return tree


def load_recipe(
    path: str | Path,
    overrides: typing.Sequence[str] = (),
    check: typing.Callable[[dict[str, Any]], list[Problem]] | None = None,
) -> Recipe:
    """Read, override and validate a recipe; every problem is raised together as a RecipeError.

    `check` looks further than the schema (`launcher.components.problems_in`: do the names
    resolve, do the arguments fit); its problems are reported with the schema's.
    """
    path = Path(path)
    tree = read_yaml(path)
    for text in overrides:
        apply_override(tree, *parse_override(text))
    run = tree.get("run")
    if isinstance(run, dict) or run is None:
        run = dict(run or {})
        if not run.get("name"):
            run["name"] = path.name.removesuffix(".yaml").removesuffix(".yml")
        recipe_dir = str(path.resolve().parent)
        paths = run.get("import_paths") or []
        if isinstance(paths, list) and recipe_dir not in paths:
            run["import_paths"] = [*paths, recipe_dir]
        tree["run"] = run
    recipe, problems = None, []
    try:
        recipe = Recipe.model_validate(tree)
    except ValidationError as error:
        problems = problems_from(error)
    if check is not None:
        problems += check(tree)
    if problems:
        order = list(Recipe.model_fields)
        problems.sort(key=lambda p: order.index(p.path.split(".")[0]) if p.path.split(".")[0] in order else len(order))
        raise RecipeError(str(path), problems)
    assert recipe is not None
    return recipe


def dump_recipe(recipe: Recipe, path: Path, header: str = "") -> None:
    text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
    path.write_text(header + text)


def json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "launcher recipe"
    return schema
