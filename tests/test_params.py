"""params.yaml validation: good values load, bad ones give one line naming key and value."""

import copy
from pathlib import Path

import pytest
import yaml

from reel_driver.config import params
from reel_driver.config.errors import PipelineError

PARAMS_FILE = Path(__file__).resolve().parent.parent / "params.yaml"
REPO_PARAMS = yaml.safe_load(PARAMS_FILE.read_text())


def with_value(section: str, key: str, value: object) -> dict:
    raw = copy.deepcopy(REPO_PARAMS)
    raw[section][key] = value
    return raw


def test_repository_params_load() -> None:
    loaded = params.parse(REPO_PARAMS)
    assert loaded.extract.source == "auto"  # the sample, unless the environment names a database
    assert loaded.extract.table == "atp.training" and loaded.publish.table == "atp.prediction"
    assert loaded.split.test_size == 0.15
    assert loaded.prep.media_types == ["movie"]


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("extract", "source", "postgres"),
        ("extract", "source", "sample"),
        ("extract", "table", "public.my_training"),
        ("extract", "sample_rows", 100),
        ("prep", "media_types", ["movie", "tv_show"]),
        ("prep", "zero_as_unknown", []),
        ("prep", "list_columns", ["genre", "production_companies"]),
        ("prep", "min_count", 1),
        ("split", "test_size", 0.3),
        ("split", "seed", 0),
        ("train", "ensemble", ["lightgbm", "catboost"]),
    ],
)
def test_good_values(section: str, key: str, value: object) -> None:
    loaded = params.parse(with_value(section, key, value))
    assert getattr(getattr(loaded, section), key) == value


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("extract", "source", "sampel", "extract.source = 'sampel': Input should be 'auto', 'sample' or 'postgres'"),
        ("extract", "table", "training", "extract.table = 'training': Value error, must be schema-qualified"),
        ("extract", "table", "a.b.c", "must be schema-qualified"),
        ("extract", "sample_rows", 10, "extract.sample_rows = 10: Input should be greater than or equal to 100"),
        ("extract", "seed", -1, "extract.seed = -1"),
        ("extract", "batch_rows", 0, "extract.batch_rows = 0"),
        ("extract", "sample_rows", "many", "extract.sample_rows = 'many'"),
        ("prep", "media_types", [], "prep.media_types = []"),
        ("prep", "media_types", ["film"], "prep.media_types.0 = 'film': Input should be 'movie', 'tv_show', 'tv_season' or 'tv_episode_pack'"),
        ("prep", "list_columns", ["genre", "genre"], "values must not repeat"),
        ("train", "ensemble", ["xgboost"], "train.ensemble.0 = 'xgboost': Input should be 'lightgbm' or 'catboost'"),
        ("train", "ensemble", ["catboost", "catboost"], "train.ensemble = ['catboost', 'catboost']: Value error, values must not repeat"),
        ("prep", "zero_as_unknown", ["imdb_votes"], "prep.zero_as_unknown.0 = 'imdb_votes'"),
        ("prep", "min_count", 0, "prep.min_count = 0"),
        ("prep", "drop_anomalous", "sometimes", "prep.drop_anomalous = 'sometimes'"),
        ("split", "test_size", 1.5, "split.test_size = 1.5: Input should be less than 1"),
        ("split", "test_size", 0, "split.test_size = 0: Input should be greater than 0"),
        ("extract", "sample_rows", "4000", "extract.sample_rows = '4000': Input should be a valid integer"),
        ("extract", "seed", True, "extract.seed = True: Input should be a valid integer"),
        ("prep", "drop_anomalous", "yes", "prep.drop_anomalous = 'yes': Input should be a valid boolean"),
        ("split", "seed", 42.0, "split.seed = 42.0: Input should be a valid integer"),
        ("evaluate", "threshold", 1.0, "evaluate.threshold = 1.0: Input should be less than 1; allowed: a number > 0 and < 1"),
        ("search", "cv_folds", 1, "search.cv_folds = 1: Input should be greater than or equal to 2; allowed: an integer >= 2"),
        ("review", "recall_floor", 1.5, "review.recall_floor = 1.5"),
        ("review", "recall_drop_tolerance", -0.1, "review.recall_drop_tolerance = -0.1"),
    ],
)
def test_bad_values(section: str, key: str, value: object, message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        params.parse(with_value(section, key, value))
    line = str(caught.value)
    assert message in line
    assert "\n" not in line


def test_unknown_key_is_an_error_that_lists_the_allowed_keys() -> None:
    raw = copy.deepcopy(REPO_PARAMS)
    raw["extract"]["sorce"] = "postgres"
    with pytest.raises(PipelineError, match=r"unknown key extract\.sorce; did you mean source\? allowed keys here: source, table"):
        params.parse(raw)


def test_unknown_section_is_an_error() -> None:
    with pytest.raises(PipelineError, match=r"unknown key trian; did you mean train\? allowed keys here: extract, prep, split"):
        params.parse({**REPO_PARAMS, "trian": {}})


def test_missing_key_is_named() -> None:
    raw = copy.deepcopy(REPO_PARAMS)
    del raw["split"]["seed"]
    with pytest.raises(PipelineError, match=r"missing key split\.seed"):
        params.parse(raw)


@pytest.mark.parametrize("text", ["", "- a list\n", "extract: [unclosed\n"])
def test_unreadable_file_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match="params.yaml") as caught:
        params.load(path)
    assert "\n" not in str(caught.value)


def test_missing_file_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="run from the repository root"):
        params.load(tmp_path / "params.yaml")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("scale_pos_weight", -1, "scale_pos_weight = -1: Input should be greater than 0; "
         "allowed: one value or a list of distinct values, each a number > 0"),
        ("scale_pos_weight", [1, -1], "scale_pos_weight[1] = -1: Input should be greater than 0"),
        ("max_depth", [], "max_depth = []: Value should have at least 1 item"),
        ("max_depth", "deep", "max_depth = 'deep': Input should be a valid integer; "
         "allowed: one value or a list of distinct values, each an integer >= 1 and <= 20"),
        ("learning_rate", [0.1, 0.1], "values must not repeat"),
    ],
)
def test_bad_grid_values_name_the_key_and_the_allowed_values(key: str, value: object, message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        params.parse({**REPO_PARAMS, key: value})
    assert message in str(caught.value)


def test_a_typo_in_a_grid_key_suggests_the_key() -> None:
    with pytest.raises(PipelineError, match=r"unknown key scale_pos_wieght; did you mean scale_pos_weight\?"):
        params.parse({**REPO_PARAMS, "scale_pos_wieght": 9})


@pytest.mark.parametrize(("minority", "message"), [
    (3, "search.cv_folds = 5: the training rows hold only 3 of the smaller class; allowed: 2 to 3"),
    (1, "only 1 of the smaller class; no value works"),
])
def test_more_folds_than_the_smaller_class_is_refused(minority: int, message: str) -> None:
    settings = params.parse(REPO_PARAMS).search
    settings.check_folds(5)
    with pytest.raises(PipelineError) as caught:
        settings.check_folds(minority)
    assert message in str(caught.value)


# ---- `dvc exp run -S` rewrites params.yaml: an experiment's diff is its own keys ------

def _rewritten(tmp_path: Path, override: str) -> tuple[list[str], list[str]]:
    """params.yaml through DVC's own -S code path (Hydra overrides, ruamel dump): (removed, added) lines."""
    import difflib

    from dvc.utils.hydra import apply_overrides

    original = PARAMS_FILE.read_text()
    copy_ = tmp_path / "params.yaml"
    copy_.write_text(original)
    apply_overrides(copy_, [override])
    diff = list(difflib.ndiff(original.splitlines(), copy_.read_text().splitlines()))
    return [line[2:] for line in diff if line.startswith("- ")], [line[2:] for line in diff if line.startswith("+ ")]


@pytest.mark.parametrize(
    ("override", "removed", "added"),
    [
        ("split.seed=42", [], []),  # a value set to itself: not a byte moves
        ("evaluate.threshold=0.3", ["  threshold: 0.35         # the owner's working threshold (recall first)"],
         ["  threshold: 0.3          # the owner's working threshold (recall first)"]),
        ("max_depth=[3,5]", ["- 7"], []),
        ("scale_pos_weight=9", ["scale_pos_weight:", "- 1", "- 5", "- 9", "- 15"], ["scale_pos_weight: 9"]),
        ("+scale_pos_wieght=9", [], ["scale_pos_wieght: 9"]),
        ("train.ensemble=[]", ["  ensemble:", "  - lightgbm", "  - catboost"], ["  ensemble: []"]),  # README's two
        ("prep.text_columns=[overview,tagline]", ["  text_columns: []"], ["  text_columns:", "  - overview", "  - tagline"]),
    ],
)
def test_dvc_set_param_changes_only_the_key_it_sets(tmp_path: Path, override: str, removed: list, added: list) -> None:
    assert _rewritten(tmp_path, override) == (removed, added)


def test_dvc_set_param_keeps_every_comment(tmp_path: Path) -> None:
    original = PARAMS_FILE.read_text()
    _rewritten(tmp_path, "scale_pos_weight=9")
    comments = lambda text: [line.partition("#")[2].strip() for line in text.splitlines() if "#" in line]  # noqa: E731
    assert comments((tmp_path / "params.yaml").read_text()) == comments(original)


def _list_keys() -> list[str]:
    return [f"{section}.{key}" if key else section for section, value in REPO_PARAMS.items()
            for key, item in (value.items() if isinstance(value, dict) else [("", value)]) if isinstance(item, list)]


def _other_lines(text: str, dotted: str) -> list[str]:
    """params.yaml's lines without those of ``dotted`` (its key line and block items)."""
    section, _, key = dotted.partition(".")
    indent, name = ("  ", key) if key else ("", section)
    kept, inside = [], False
    for line in text.splitlines():
        inside = line.startswith(f"{indent}{name}:") or (inside and line.startswith(f"{indent}- "))
        if not inside:
            kept.append(line)
    return kept


@pytest.mark.parametrize("dotted", _list_keys())
def test_dvc_set_param_empties_and_refills_every_list_leaving_the_rest(tmp_path: Path, dotted: str) -> None:
    """A comment on a list key's own line once made -S 'train.ensemble=[]' write a file nobody could read."""
    from dvc.utils.hydra import apply_overrides

    original = PARAMS_FILE.read_text()
    copy_ = tmp_path / "params.yaml"
    copy_.write_text(original)
    section, _, key = dotted.partition(".")
    for value in (["a"], [], ["a", "b"], [], ["x", "y", "z"]):
        apply_overrides(copy_, [f"{dotted}=[{','.join(value)}]"])
        rewritten = yaml.safe_load(copy_.read_text())
        assert (rewritten[section][key] if key else rewritten[section]) == value
        assert _other_lines(copy_.read_text(), dotted) == _other_lines(original, dotted)


# ---- reel-driver params check KEY=VALUE: the did-you-mean that `dvc exp run -S` cannot reach ----

@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["scale_pos_wieght=9"], "params.yaml with scale_pos_wieght=9: unknown key scale_pos_wieght; "
                                 "did you mean scale_pos_weight? allowed keys here: extract,"),
        (["+scale_pos_wieght=9"], "params.yaml with +scale_pos_wieght=9: unknown key scale_pos_wieght; did you mean scale_pos_weight?"),
        (["evaluat.threshold=0.3"], "params.yaml with evaluat.threshold=0.3: unknown key evaluat; did you mean evaluate?"),
        (["evaluate.treshold=0.3"], "params.yaml with evaluate.treshold=0.3: unknown key evaluate.treshold; did you mean threshold?"),
        (["max_depth=0"], "params.yaml with max_depth=0: max_depth = 0: Input should be greater than or equal to 1"),
        (["scale_pos_weight=9", "extract.source=mysql"], "params.yaml with scale_pos_weight=9 extract.source=mysql: "
                                                        "extract.source = 'mysql': Input should be 'auto', 'sample' or 'postgres'"),
        (["scale_pos_weight"], "'scale_pos_weight': expected KEY=VALUE"),
        (["max_depth.deep=1"], "'max_depth.deep=1': max_depth is not a section of params.yaml"),
    ],
)
def test_check_names_the_bad_override(workdir, overrides: list[str], line: str) -> None:
    before = Path("params.yaml").read_bytes()
    with pytest.raises(PipelineError) as caught:
        params.check(overrides)
    assert str(caught.value).startswith(line)
    assert Path("params.yaml").read_bytes() == before  # nothing is written


@pytest.mark.parametrize(
    ("overrides", "read"),
    [
        (["scale_pos_weight=9"], lambda p: p.scale_pos_weight == [9]),
        (["max_depth=[3,5]", "evaluate.threshold=0.3"], lambda p: p.max_depth == [3, 5] and p.evaluate.threshold == 0.3),
        (["extract.source=postgres"], lambda p: p.extract.source == "postgres"),
        ([], lambda p: p.extract.source == "auto"),
    ],
)
def test_check_applies_good_overrides(workdir, overrides: list[str], read) -> None:
    assert read(params.check(overrides))


def test_params_check_command_is_one_line_and_exit_1(workdir) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "reel_driver.cli", "params", "check"]
    typo = subprocess.run([*command, "scale_pos_wieght=9"], capture_output=True, text=True)
    assert typo.returncode == 1 and typo.stdout == ""
    assert typo.stderr.startswith("error: params.yaml with scale_pos_wieght=9: unknown key scale_pos_wieght; "
                                  "did you mean scale_pos_weight?") and len(typo.stderr.splitlines()) == 1
    good = subprocess.run([*command, "scale_pos_weight=9"], capture_output=True, text=True)
    assert (good.returncode, good.stdout) == (0, "params.yaml with scale_pos_weight=9: valid\n")
