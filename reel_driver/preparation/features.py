"""The feature build of seed 001 ("feature engineering"), fitted on training rows only.

``fit`` learns what the build needs from training rows (min/max per continuous
field, the vocabulary of each list and categorical column); ``build`` applies
it to any rows: prep's train and test rows, and later new movies to score.
Both keep to one definition, which is what keeps training and serving equal.
"""

import json
import re
import unicodedata
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from reel_driver.config.params import PrepParams

CONTINUOUS = (
    "release_year", "budget", "revenue", "runtime", "tmdb_rating",
    "tmdb_votes", "rt_score", "metascore", "imdb_rating", "imdb_votes",
)
# Column-name prefix of each list column's one-hot features (seed 001's names).
LIST_PREFIXES = {
    "origin_country": "origin_country",
    "production_countries": "production_country",
    "spoken_languages": "spoken_language",
    "genre": "genre",
    "production_companies": "production_company",
}
NORM_SUFFIX = "_norm"
TEXT_PREFIX = "text_svd_"
# the TF-IDF vocabulary's size cap: its terms x components floats go into models/features.json
TEXT_TERMS = 5000


class MinMax(BaseModel):
    model_config = ConfigDict(frozen=True)
    min: float | None
    max: float | None


class Encoding(BaseModel):
    """One list column's one-hot features: a value and the column it sets."""

    model_config = ConfigDict(frozen=True)
    values: list[str]
    columns: list[str]


class TextEncoding(BaseModel):
    """The text columns, joined, as TF-IDF over a training vocabulary projected on SVD
    components (seed 001's text branch, with an encoder that needs no download)."""

    model_config = ConfigDict(frozen=True)
    sources: list[str]
    vocabulary: list[str]
    idf: list[float]
    components: list[list[float]]
    columns: list[str]

    @cached_property
    def _projection(self):
        """Built once per loaded spec: a server scores many small batches with it."""
        vectorizer = tfidf(vocabulary=self.vocabulary)
        vectorizer.idf_ = np.asarray(self.idf)
        return vectorizer, np.asarray(self.components).T

    def values(self, rows: pl.DataFrame) -> np.ndarray:
        """One row of component values per row; a row without text gets zeros."""
        vectorizer, projection = self._projection
        return vectorizer.transform(_joined(rows, self.sources)) @ projection


def tfidf(vocabulary: list[str] | None = None):
    """The text branch's TF-IDF: fitted (a vocabulary of terms in at least 2 rows), or over ``vocabulary``."""
    from sklearn.feature_extraction.text import (
        TfidfVectorizer,  # only a build with text pays for it
    )

    return TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=2 if vocabulary is None else 1,
                           max_features=None if vocabulary else TEXT_TERMS, vocabulary=vocabulary, dtype=np.float64)


def _joined(rows: pl.DataFrame, sources: list[str]) -> list[str]:
    return rows.select(pl.concat_str([pl.col(c).fill_null("") for c in sources], separator=" ")).to_series().to_list()


def fit_text(train: pl.DataFrame, sources: list[str], components: int) -> TextEncoding:
    """TF-IDF and a truncated SVD fitted on training rows (no label is read)."""
    from sklearn.decomposition import TruncatedSVD

    vectorizer = tfidf()
    weights = vectorizer.fit_transform(_joined(train, sources))
    # SVD needs fewer components than terms: a tiny vocabulary gets fewer columns
    svd = TruncatedSVD(n_components=max(1, min(components, weights.shape[1] - 1)), random_state=0).fit(weights)
    return TextEncoding(sources=list(sources), vocabulary=vectorizer.get_feature_names_out().tolist(),
                        idf=vectorizer.idf_.tolist(), components=svd.components_.tolist(),
                        columns=[f"{TEXT_PREFIX}{i}" for i in range(svd.n_components)])


class FeatureSpec(BaseModel):
    """All a build needs; saved as models/features.json and models/normalization.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    zero_as_unknown: list[str]
    normalization: dict[str, MinMax]
    lists: dict[str, Encoding]
    categoricals: dict[str, list[str]]
    text: TextEncoding | None = None
    columns: list[str]

    def features_json(self) -> dict:
        # without the text branch the file is as before it existed: no rerun for those who never use it
        return self.model_dump(exclude={"normalization"}, exclude_none=True)

    def normalization_json(self) -> dict:
        return {name: bounds.model_dump() for name, bounds in self.normalization.items()}

    @classmethod
    def from_json(cls, features: dict, normalization: dict) -> "FeatureSpec":
        return cls.model_validate({**features, "normalization": normalization})

    @classmethod
    def load(cls, features_path: Path, normalization_path: Path) -> "FeatureSpec":
        """Read the spec prep wrote (models/features.json and models/normalization.json)."""
        return cls.from_json(json.loads(Path(features_path).read_text()), json.loads(Path(normalization_path).read_text()))


def _slug(value: str) -> str:
    ascii_value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return re.sub(r"[^0-9a-z]+", "_", ascii_value.lower()).strip("_") or "value"


def _one_hot_names(prefix: str, values: list[str]) -> list[str]:
    """Column names for sorted values; a name two values share gets _2, _3 ... in value order."""
    names: list[str] = []
    for value in values:
        name = f"{prefix}_{_slug(value)}"
        candidate, n = name, 1
        while candidate in names:
            n += 1
            candidate = f"{name}_{n}"
        names.append(candidate)
    return names


def _known(column: str, zero_as_unknown: list[str]) -> pl.Expr:
    """A continuous column as Float64, with 0 read as unknown where the params say so."""
    value = pl.col(column).cast(pl.Float64)
    if column in zero_as_unknown:
        return pl.when(value == 0).then(None).otherwise(value).alias(column)
    return value


def _frequent(values: pl.Series, min_count: int) -> list[str]:
    """Sorted non-null values that at least ``min_count`` rows hold."""
    counts = values.drop_nulls().value_counts()
    return sorted(counts.filter(pl.col("count") >= min_count).get_column(values.name).to_list())


def fit(train: pl.DataFrame, settings: PrepParams) -> FeatureSpec:
    """Learn normalization bounds and vocabularies from training rows."""
    known = train.select(_known(c, settings.zero_as_unknown) for c in CONTINUOUS)
    normalization = {c: MinMax(min=known[c].min(), max=known[c].max()) for c in CONTINUOUS}
    lists = {}
    for column in settings.list_columns:
        # count rows, not mentions: a value listed twice in one row counts once
        values = _frequent(train.get_column(column).list.unique().explode(), settings.min_count)
        lists[column] = Encoding(values=values, columns=_one_hot_names(LIST_PREFIXES[column], values))
    categoricals = {c: _frequent(train.get_column(c), settings.min_count) for c in settings.categorical_columns}
    text = fit_text(train, settings.text_columns, settings.text_components) if settings.text_columns else None
    columns = [
        *(f"{c}{NORM_SUFFIX}" for c in CONTINUOUS),
        *(name for encoding in lists.values() for name in encoding.columns),
        *(text.columns if text else []),
        *categoricals,
    ]
    return FeatureSpec(
        zero_as_unknown=list(settings.zero_as_unknown),
        normalization=normalization,
        lists=lists,
        categoricals=categoricals,
        text=text,
        columns=columns,
    )


def _scaled(column: str, bounds: MinMax, zero_as_unknown: list[str]) -> pl.Expr:
    value = _known(column, zero_as_unknown)
    if bounds.min is None or bounds.max is None:  # never known in training rows
        return pl.lit(None, pl.Float64).alias(f"{column}{NORM_SUFFIX}")
    span = (bounds.max - bounds.min) or 1.0
    # no clipping: a value beyond the training range stays beyond [0, 1]
    return ((value - bounds.min) / span).alias(f"{column}{NORM_SUFFIX}")


def build(rows: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """The feature columns of ``rows``, in ``spec.columns`` order."""
    scaled = [_scaled(c, bounds, spec.zero_as_unknown) for c, bounds in spec.normalization.items()]
    one_hot = [
        pl.col(column).list.contains(value).fill_null(False).cast(pl.Int8).alias(name)
        for column, encoding in spec.lists.items()
        for value, name in zip(encoding.values, encoding.columns)
    ]
    # a category unseen in training (or too rare there) becomes null, as missing does
    categorical = [
        pl.when(pl.col(c).is_in(vocabulary)).then(pl.col(c)).cast(pl.Enum(vocabulary)).alias(c)
        for c, vocabulary in spec.categoricals.items()
    ]
    built = rows.select(*scaled, *one_hot, *categorical)
    if spec.text:
        built = built.with_columns(pl.DataFrame(spec.text.values(rows), schema=spec.text.columns, orient="row"))
    return built.select(spec.columns)


def model_values(built: pl.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Built features as XGBoost's float32 values and feature types ("c": a categorical, as its
    category code, which is what XGBoost reads from a pandas category too). Faster than
    through pandas: a DMatrix of 50 rows took 33 ms that way, 5 ms this way; and the search
    builds its fold matrices unnamed, since XGBoost reads every column's name back at every
    boosting round (15% of a fit's time on this data)."""
    enums = {name for name, dtype in built.schema.items() if isinstance(dtype, pl.Enum)}
    values = built.select(pl.col(c).to_physical() if c in enums else pl.col(c) for c in built.columns)
    return values.to_numpy().astype(np.float32), ["c" if c in enums else "q" for c in built.columns]
