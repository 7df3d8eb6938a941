"""params.yaml as typed, validated objects: one model per section.

Stages call ``load()`` once at start; nothing else reads params.yaml. A bad
value stops the stage with one line naming the key, the value and what is
allowed, before any output is touched.
"""

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo

from reel_driver.config import paths
from reel_driver.config.errors import PipelineError

MediaType = Literal["movie", "tv_show", "tv_season", "tv_episode_pack"]
ListColumn = Literal["origin_country", "production_countries", "spoken_languages", "genre", "production_companies"]
CategoricalColumn = Literal["production_status", "original_language"]
TextColumn = Literal["overview", "tagline"]
EnsembleFamily = Literal["lightgbm", "catboost"]
ZeroUnknownColumn = Literal["budget", "revenue", "runtime"]


class _Section(BaseModel):
    # Unknown keys are typos (extract.sorce), not options to ignore; no field
    # has a default, so params.yaml is the one place a value is set.
    # strict: "4000", "yes" or true are not numbers or booleans, whatever YAML allows
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("values must not repeat")
    return values


def _schema_qualified(table: str) -> str:
    parts = table.split(".")
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise ValueError("must be schema-qualified, like atp.training")
    return table


# schema.name; quoted with psycopg.sql.Identifier where it is used, never formatted into SQL
TableName = Annotated[str, AfterValidator(_schema_qualified)]


class ExtractParams(_Section):
    source: Literal["auto", "sample", "postgres"]
    table: TableName
    sample_rows: Annotated[int, Field(ge=100)]
    seed: Annotated[int, Field(ge=0)]
    batch_rows: Annotated[int, Field(ge=1)]


class PrepParams(_Section):
    media_types: Annotated[list[MediaType], Field(min_length=1)]
    drop_anomalous: bool
    include_unreviewed: bool
    zero_as_unknown: list[ZeroUnknownColumn]
    list_columns: list[ListColumn]
    categorical_columns: list[CategoricalColumn]
    min_count: Annotated[int, Field(ge=1)]
    text_columns: list[TextColumn]
    text_components: Annotated[int, Field(ge=1, le=256)]

    _no_repeats = field_validator(
        "media_types", "zero_as_unknown", "list_columns", "categorical_columns", "text_columns"
    )(_unique)


class SplitParams(_Section):
    test_size: Annotated[float, Field(gt=0, lt=1)]
    seed: Annotated[int, Field(ge=0)]


class AnalysisParams(_Section):
    null_high: Annotated[float, Field(ge=0, le=1)]
    distinct_high: Annotated[float, Field(gt=0, le=1)]
    distinct_low: Annotated[int, Field(ge=0)]
    normality_p: Annotated[float, Field(gt=0, lt=1)]
    text_short_chars: Annotated[int, Field(ge=0)]
    text_max_p: Annotated[float, Field(gt=0, lt=1)]
    inter_r: Annotated[float, Field(gt=0, le=1)]
    inter_cramers_v: Annotated[float, Field(gt=0, le=1)]
    inter_chi2_p: Annotated[float, Field(gt=0, lt=1)]
    inter_anova_f: Annotated[float, Field(ge=0)]
    target_r: Annotated[float, Field(ge=0, le=1)]
    target_anova_f: Annotated[float, Field(ge=0)]
    target_cramers_v: Annotated[float, Field(ge=0, le=1)]
    target_chi2_p: Annotated[float, Field(gt=0, lt=1)]
    target_rule: Literal["any", "all"]
    apply_selection: bool


class SearchParams(_Section):
    strategy: Literal["halving", "tpe", "grid"]
    cv_folds: Annotated[int, Field(ge=2)]
    scoring: Literal["f2", "recall_at_precision", "average_precision"]
    threshold: Annotated[float, Field(gt=0, lt=1)]
    precision_floor: Annotated[float, Field(ge=0, le=1)]
    budget: Annotated[int, Field(ge=1)]
    reduction: Annotated[int, Field(ge=2)]
    prune: bool
    seed: Annotated[int, Field(ge=0)]
    jobs: Annotated[int, Field(ge=1)]


    def check_folds(self, minority: int) -> None:
        """Stratified CV puts rows of each class in every fold: cv_folds cannot exceed the smaller class."""
        if self.cv_folds > minority:
            allowed = f"allowed: 2 to {minority}" if minority >= 2 else "no value works: relabel or extract more rows"
            raise PipelineError(
                f"search.cv_folds = {self.cv_folds}: the training rows hold only {minority} of the smaller class; {allowed}"
            )


class TrainParams(_Section):
    device: Literal["cpu", "cuda"]
    ensemble: list[EnsembleFamily]

    _no_repeats = field_validator("ensemble")(_unique)


class EvaluateParams(_Section):
    threshold: Annotated[float, Field(gt=0, lt=1)]
    review_below: Annotated[float, Field(ge=0, lt=1)]


class PublishParams(_Section):
    table: TableName
    batch_rows: Annotated[int, Field(ge=1)]


class ReviewParams(_Section):
    """`reel-driver review` (not a pipeline stage): the gate on hold-out recall against the baseline."""

    recall_drop_tolerance: Annotated[float, Field(ge=0, le=1)]
    recall_floor: Annotated[float, Field(ge=0, le=1)]


class ServeParams(_Section):
    """`reel-driver serve` (not a pipeline stage): where it listens, how often it looks for a new champion."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    poll_seconds: Annotated[float, Field(gt=0)]
    log_requests: bool


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _grid_values(item: Any) -> Any:
    """A grid key: a list is searched, a scalar is pinned (kept as a list of one)."""
    return Annotated[list[item], BeforeValidator(_as_list), Field(min_length=1), AfterValidator(_unique)]


class Params(_Section):
    extract: ExtractParams
    prep: PrepParams
    split: SplitParams
    analysis: AnalysisParams
    # The hyperparameter grid (seed 001, "production grid"), top-level so that
    # `dvc exp run -S scale_pos_weight=9` works as typed.
    scale_pos_weight: _grid_values(Annotated[float, Field(gt=0)])
    max_depth: _grid_values(Annotated[int, Field(ge=1, le=20)])
    n_estimators: _grid_values(Annotated[int, Field(ge=1)])
    min_child_weight: _grid_values(Annotated[float, Field(ge=0)])
    learning_rate: _grid_values(Annotated[float, Field(gt=0, le=1)])
    gamma: _grid_values(Annotated[float, Field(ge=0)])
    reg_alpha: _grid_values(Annotated[float, Field(ge=0)])
    subsample: _grid_values(Annotated[float, Field(gt=0, le=1)])
    max_delta_step: _grid_values(Annotated[float, Field(ge=0)])
    colsample_bytree: _grid_values(Annotated[float, Field(gt=0, le=1)])
    colsample_bylevel: _grid_values(Annotated[float, Field(gt=0, le=1)])
    search: SearchParams
    train: TrainParams
    evaluate: EvaluateParams
    publish: PublishParams
    review: ReviewParams
    serve: ServeParams

    @property
    def grid(self) -> dict[str, list[float]]:
        """The grid keys and their values, in params.yaml order."""
        return {key: getattr(self, key) for key in GRID_KEYS}


GRID_KEYS = (
    "scale_pos_weight", "max_depth", "n_estimators", "min_child_weight", "learning_rate", "gamma",
    "reg_alpha", "subsample", "max_delta_step", "colsample_bytree", "colsample_bylevel",
)


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _allowed(field: FieldInfo, grid: bool) -> str:
    """What a scalar field (or each value of a grid key) may be, from its type and bounds."""
    kind, constraints = field.annotation, field.metadata
    if grid:  # list[Annotated[item, Field(...)]]
        kind, item_field = typing.get_args(typing.get_args(kind)[0])
        constraints = item_field.metadata
    if kind not in _KINDS:
        return ""  # Literal, lists: pydantic's own message lists the values
    bounds = [f"{sign} {getattr(c, name)}" for c in constraints for name, sign in _BOUNDS if hasattr(c, name)]
    text = f"{_KINDS[kind]} {' and '.join(bounds)}" if bounds else _KINDS[kind]
    return f"; allowed: one value or a list of distinct values, each {text}" if grid else f"; allowed: {text}"


def _describe(error: ValidationError, raw: dict, source: Path) -> str:
    first = error.errors()[0]
    loc = first["loc"]
    key = ".".join(str(part) for part in loc)
    if first["type"] == "extra_forbidden":
        section = Params.model_fields.get(str(loc[0]))
        model = section.annotation if section and len(loc) > 1 else Params
        allowed = list(model.model_fields)  # type: ignore[union-attr]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{source}: unknown key {key}; {hint}allowed keys here: {', '.join(allowed)}"
    if first["type"] == "missing":
        return f"{source}: missing key {key}"
    if loc[0] in GRID_KEYS:
        field, grid = Params.model_fields[str(loc[0])], True
        if len(loc) == 2:  # one value: by position in a list, by name alone when pinned as a scalar
            key = f"{loc[0]}[{loc[1]}]" if isinstance(raw.get(loc[0]), list) else str(loc[0])
    else:
        section = Params.model_fields[str(loc[0])].annotation
        field = section.model_fields.get(str(loc[1])) if len(loc) == 2 else None  # type: ignore[union-attr]
        grid = False
    allowed = _allowed(field, grid) if field is not None else ""
    return f"{source}: {key} = {first['input']!r}: {first['msg']}{allowed}"


def parse(raw: Any, source: Path | str = paths.PARAMS) -> Params:
    """Validate a params mapping; raises PipelineError with one line on the first problem."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(_describe(error, raw, source)) from None


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run from the repository root") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from error


def load(path: Path = paths.PARAMS) -> Params:
    """Read and validate params.yaml."""
    return parse(_read(path), path)


def check(overrides: list[str], path: Path = paths.PARAMS) -> Params:
    """Validate params.yaml as `dvc exp run -S KEY=VALUE ...` would leave it, writing nothing.

    DVC refuses an unknown key itself (Hydra's "Key ... is not in struct", no suggestion)
    and adds it with ``+KEY=VALUE``, after which the first stage refuses it; here any key
    is set as given, so a typo gets this module's did-you-mean before anything runs.
    Keys are dotted (evaluate.threshold); values are read as YAML (9, [3, 5], postgres).
    """
    raw = _read(path)
    for override in overrides:
        key, equals, value = override.removeprefix("+").partition("=")
        if not equals or not key:
            raise PipelineError(f"{override!r}: expected KEY=VALUE, like scale_pos_weight=9 or evaluate.threshold=0.3")
        *sections, name = key.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {}) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            raise PipelineError(f"{override!r}: {'.'.join(sections)} is not a section of {path}")
        try:
            target[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            target[name] = value  # as Hydra reads it: a plain string
    return parse(raw, f"{path} with {' '.join(overrides)}" if overrides else path)
