"""A synthetic atp.training, so the whole pipeline runs with no database.

Shaped like the table as deployed today: its columns and types, about one
would_watch in ten movies, a few tv_show/tv_season/tv_episode_pack rows, the
flags (reviewed, human_labeled, anomalous), and what the media pipeline leaves
between reviews: rows labeled by its model and not reviewed (here the label
disagrees with the owner's preferences, so training on them shows), and new
arrivals with no label yet;  the real rates of NULL and of 0-as-unknown,
list columns with TMDB genres and ISO codes, NULL arrays. Calibrated on the
real export's aggregates only (rates, quantiles, value frequencies); no real
row, title or id is here. Labels follow the owner's stated preferences (seed
001, "why XGBoost"), so a model trained on the sample has something to learn.
"""

from datetime import datetime, timezone

import numpy as np
import polars as pl
from scipy.optimize import brentq
from scipy.special import expit

from reel_driver.data import schema

# Relative frequencies in the real export (per 1,000 list entries, rounded).
GENRES = {
    "Drama": 1497, "Comedy": 1060, "Thriller": 732, "Action": 519, "Documentary": 490,
    "Horror": 476, "Romance": 453, "Crime": 404, "Adventure": 260, "Family": 243,
    "TV Movie": 228, "Science Fiction": 226, "Fantasy": 203, "Mystery": 189, "Music": 175,
    "Animation": 173, "History": 125, "War": 75, "Western": 63,
}
TV_GENRES = ["Sci-Fi & Fantasy", "Action & Adventure", "Reality", "Kids", "News", "Talk", "Comedy", "Drama"]
# country -> (weight, original language of a film made there)
COUNTRIES = {
    "US": (2307, "en"), "GB": (373, "en"), "FR": (177, "fr"), "CA": (174, "en"), "IN": (132, "hi"),
    "IT": (74, "it"), "JP": (73, "ja"), "ES": (65, "es"), "DE": (63, "de"), "AU": (63, "en"),
    "BE": (50, "fr"), "TR": (45, "tr"), "CN": (38, "zh"), "HK": (35, "cn"), "NL": (34, "nl"),
    "MX": (31, "es"), "KR": (29, "ko"), "SE": (28, "sv"), "RO": (27, "ro"), "ID": (26, "id"),
    "IE": (25, "en"), "BR": (24, "pt"), "NO": (21, "no"), "PL": (20, "pl"), "DK": (20, "da"),
    "PH": (17, "tl"), "CH": (14, "de"), "AT": (14, "de"), "NG": (14, "en"), "TH": (13, "th"),
    "AR": (12, "es"), "FI": (9, "fi"), "CZ": (8, "cs"), "GR": (7, "el"), "IR": (7, "fa"),
    "RU": (9, "ru"), "IL": (6, "he"), "ZA": (6, "en"), "NZ": (8, "en"), "EG": (5, "ar"),
}
# Indian films split across these original languages.
INDIAN_LANGUAGES = ["hi", "te", "ta", "ml", "pa"]
# second spoken languages, beside the original one
SECOND_LANGUAGES = {"en": 40, "fr": 12, "es": 12, "de": 8, "it": 5, "ru": 5, "ja": 3, "zh": 3, "ar": 3, "la": 2, "xx": 2}
STATUSES_MOVIE = {"Released": 0.998, "In Production": 0.001, "Canceled": 0.001}
STATUSES_TV = {"Returning Series": 0.75, "Ended": 0.25}

# Rates in the real export, movies only unless noted.
P_TV_SHOW = 0.008
P_TV_SEASON = 0.004
P_TV_EPISODE_PACK = 0.002
P_POSITIVE = 0.102
P_BUDGET_KNOWN = 0.20
P_RUNTIME_ZERO = 0.034
P_NO_ORIGIN = 0.001
P_NO_PRODUCTION_COUNTRIES = 0.137
P_NO_SPOKEN = 0.084
P_NO_GENRE = 0.014
P_NO_COMPANIES = 0.166
P_EMPTY_TAGLINE = 0.52
P_EMPTY_OVERVIEW = 0.007
P_TRANSLATED_TITLE = 0.22
# Flags of newer deployments: a few items verified but always mispredicted.
P_ANOMALOUS = 0.005
P_HUMAN_LABELED = 0.02
# Between two reviews (realdb.py --today: 300 pipeline-labeled and 150 new of 4,200 rows).
P_UNREVIEWED = 0.07
P_UNLABELED = 0.035

_WORDS = (
    "silent harbor midnight glass river crown ember winter orchard signal hollow "
    "paper empire velvet storm canyon lantern echo frontier garden mirror shadow "
    "station copper island memory thunder cradle falcon summer harvest compass "
    "stranger ocean ashes meridian tide circus phantom horizon"
).split()
_FOREIGN = "la el der die le les los das il du del van".split()
_COMPANY_STEMS = "north bright iron blue stone silver red oak high lake star grand".split()
_COMPANY_KINDS = ["Pictures", "Films", "Studios", "Entertainment", "Media", "Productions"]
_CREATED = datetime(2025, 1, 1, tzinfo=timezone.utc)


def generate(rows: int, seed: int) -> pl.DataFrame:
    """``rows`` synthetic rows of atp.training, the same for the same seed."""
    rng = np.random.default_rng(seed)
    tv = (P_TV_SHOW, P_TV_SEASON, P_TV_EPISODE_PACK)
    media_type = rng.choice(list(schema.MEDIA_TYPES), size=rows, p=[1 - sum(tv), *tv])
    movie = media_type == "movie"
    popularity = rng.normal(size=rows)
    quality = rng.normal(size=rows)

    numbers = _numbers(rng, popularity, quality, movie)
    lists = _lists(rng, popularity, movie)
    texts = _texts(rng, rows)
    label = _labels(rng, numbers, lists, movie)
    reviewed, label = _review_state(rng, label)

    frame = pl.DataFrame(
        {
            "imdb_id": _imdb_ids(rng, rows),
            "tmdb_id": _tmdb_ids(rng, rows),
            "label": label,
            "media_type": media_type,
            **texts,
            **numbers,
            **lists,
            "human_labeled": reviewed & (rng.random(rows) < P_HUMAN_LABELED),
            "anomalous": movie & reviewed & (rng.random(rows) < P_ANOMALOUS),
            "reviewed": reviewed,
            "created_at": [_CREATED] * rows,
            "updated_at": [_CREATED] * rows,
        },
        strict=False,
    )
    return schema.conform(frame).sort("imdb_id")


def _imdb_ids(rng: np.random.Generator, rows: int) -> list[str]:
    # tt9xxxxxxx: eight digits, well above any id IMDb has issued, so never a real one
    numbers = rng.choice(10_000_000, size=rows, replace=False) + 90_000_000
    return [f"tt{n}" for n in numbers]


def _tmdb_ids(rng: np.random.Generator, rows: int) -> np.ndarray:
    # above any id TMDB has issued, like the imdb ids: never a real one
    ids = rng.choice(5_000_000, size=rows, replace=False) + 90_000_000
    ids[-1] = ids[0]  # the real table has two IMDb ids sharing one tmdb_id
    return ids


def _masked(values: np.ndarray, keep: np.ndarray) -> list:
    return [v if k else None for v, k in zip(values.tolist(), keep)]


def _numbers(rng: np.random.Generator, popularity: np.ndarray, quality: np.ndarray, movie: np.ndarray) -> dict:
    rows = popularity.size
    # IMDb votes: heavy right tail (real quantiles of log10: 1.2, 2.1, 2.7, 3.4, 5.2 at 5/25/50/75/95%)
    log_votes = 2.7 + 1.05 * popularity + 0.65 * np.maximum(popularity - 0.6, 0) ** 1.3
    imdb_votes = np.minimum(np.round(10 ** (log_votes + rng.normal(0, 0.15, rows))), 3_100_000).astype(np.int64)
    has_imdb = popularity + rng.normal(0, 0.6, rows) > -1.55  # 13% unknown, the obscure ones
    has_imdb_rating = has_imdb & (rng.random(rows) > 0.12)
    imdb_rating = np.clip(np.round(6.2 + 1.0 * quality + 0.2 * popularity, 1), 1.0, 9.6)

    # TMDB votes follow IMDb's with a flatter slope, matched to the real export's share of
    # zeros and quantiles (real: 3 / 11 / 48 / 2,242 / 14,125 at 25/50/75/95/99%, at most 37,460)
    log_tmdb = -1.2 + 0.85 * np.log10(np.maximum(imdb_votes, 1)) + rng.normal(0, 0.45, rows)
    tmdb_votes = np.minimum(np.round(10**log_tmdb), 40_000).astype(np.int64)
    tmdb_votes[tmdb_votes < 1] = 0
    tmdb_rating = np.clip(np.round(6.0 + 0.6 * quality + rng.normal(0, 1.4, rows), 3), 0.5, 10.0)
    tmdb_rating[tmdb_votes == 0] = 0.0

    # Rotten Tomatoes and Metacritic review mostly known films (30% and 19% have scores).
    has_rt = popularity + rng.normal(0, 0.5, rows) > 0.55
    rt_score = np.clip(np.round(72 + 20 * quality + rng.normal(0, 12, rows)), 0, 100).astype(np.int64)
    has_meta = has_rt & (rng.random(rows) < 0.62)
    metascore = np.clip(np.round(15 + 0.65 * rt_score + rng.normal(0, 8, rows)), 4, 100).astype(np.int64)

    recent = rng.random(rows) < 0.55
    age = np.where(recent, rng.exponential(2.5, rows), rng.exponential(28, rows))
    release_year = np.clip(2025 - np.floor(age), 1912, 2025).astype(np.int64)

    budget_known = popularity + rng.normal(0, 0.6, rows) > 0.95
    budget = np.round(10 ** (6.6 + 0.4 * popularity + rng.normal(0, 0.8, rows)), -3).astype(np.int64)
    budget = np.where(budget_known, np.clip(budget, 1000, 380_000_000), 0)
    revenue_known = budget_known & (rng.random(rows) < 0.93)
    revenue = np.round(budget * 10 ** rng.normal(0.15, 0.6, rows)).astype(np.int64)
    revenue = np.where(revenue_known, np.clip(revenue, 1, 2_900_000_000), 0)
    runtime = np.clip(np.round(rng.normal(96, 17, rows)), 40, 240).astype(np.int64)
    runtime[rng.random(rows) < P_RUNTIME_ZERO] = 0

    tv = ~movie
    return {
        "season": _masked(rng.integers(1, 12, rows), tv),
        "episode": _masked(rng.integers(2, 24, rows), tv & (rng.random(rows) < 0.8)),
        "release_year": release_year,
        # TV rows have no budget, revenue or runtime, as in the real table.
        "budget": _masked(budget, movie),
        "revenue": _masked(revenue, movie),
        "runtime": _masked(runtime, movie),
        "tmdb_rating": tmdb_rating,
        "tmdb_votes": tmdb_votes,
        "rt_score": _masked(rt_score, has_rt),
        "metascore": _masked(metascore, has_meta),
        "imdb_rating": _masked(imdb_rating, has_imdb_rating),
        "imdb_votes": _masked(imdb_votes, has_imdb),
    }


class _Weighted:
    """Draws distinct names with the given relative weights."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.names = list(weights)
        total = float(sum(weights.values()))
        self.p = np.array([w / total for w in weights.values()])

    def draw(self, rng: np.random.Generator, size: int) -> list[str]:
        return [self.names[i] for i in rng.choice(len(self.names), size=size, replace=False, p=self.p)]


def _lists(rng: np.random.Generator, popularity: np.ndarray, movie: np.ndarray) -> dict:
    rows = popularity.size
    countries = _Weighted({code: weight for code, (weight, _) in COUNTRIES.items()})
    genres = _Weighted(GENRES)
    tv_genres = _Weighted({g: 1 for g in TV_GENRES})
    second_languages = _Weighted(SECOND_LANGUAGES)
    stems = [f"{a.title()}{b}" for a in _COMPANY_STEMS for b in ("gate", "field", "line", "works")]
    names = [f"{stem} {kind}" for stem in stems for kind in _COMPANY_KINDS[:3]]
    companies = _Weighted({name: 1.0 / (rank + 1) for rank, name in enumerate(names)})  # Zipf, like studios

    n_countries = 1 + np.minimum(rng.geometric(0.88, rows) - 1, 5)
    n_spoken = np.minimum(rng.geometric(0.8, rows) - 1, 4)
    n_genres = np.minimum(rng.geometric(0.45, rows), 6)
    n_companies = np.minimum(rng.geometric(0.45, rows), 8)
    extra_country = rng.random(rows) < 0.15
    indian = rng.integers(len(INDIAN_LANGUAGES), size=rows)
    missing = {k: rng.random(rows) < p for k, p in (
        ("origin_country", P_NO_ORIGIN), ("production_countries", P_NO_PRODUCTION_COUNTRIES),
        ("spoken_languages", P_NO_SPOKEN), ("genre", P_NO_GENRE), ("production_companies", P_NO_COMPANIES))}
    status = np.where(
        movie,
        rng.choice(list(STATUSES_MOVIE), size=rows, p=list(STATUSES_MOVIE.values())),
        rng.choice(list(STATUSES_TV), size=rows, p=list(STATUSES_TV.values())),
    )

    out: dict[str, list] = {k: [] for k in (*missing, "original_language")}
    for i in range(rows):
        origin = countries.draw(rng, n_countries[i])
        language = INDIAN_LANGUAGES[indian[i]] if origin[0] == "IN" else COUNTRIES[origin[0]][1]
        values = {
            "origin_country": origin,
            "production_countries": origin + countries.draw(rng, int(extra_country[i])),
            "spoken_languages": [language] + [s for s in second_languages.draw(rng, n_spoken[i]) if s != language],
            "genre": genres.draw(rng, n_genres[i]) if movie[i] else tv_genres.draw(rng, min(n_genres[i], 3)),
            "production_companies": companies.draw(rng, n_companies[i]),
        }
        for name, value in values.items():
            out[name].append(None if missing[name][i] else value)
        out["original_language"].append(language)
    out["production_status"] = status.tolist()
    # A few awkward values the real table has: an empty array and a NULL element.
    out["production_companies"][0] = []
    out["genre"][1] = [None, "Drama"]
    return out


def _texts(rng: np.random.Generator, rows: int) -> dict:
    word = rng.integers(len(_WORDS), size=(rows, 25))
    title_words = rng.integers(1, 4, size=rows)
    sentences = rng.integers(2, 8, size=rows)
    the, translated, no_tagline, no_overview = (rng.random(rows) < p for p in (0.4, P_TRANSLATED_TITLE, P_EMPTY_TAGLINE, P_EMPTY_OVERVIEW))
    foreign = rng.integers(len(_FOREIGN), size=rows)
    titles, originals, taglines, overviews = [], [], [], []
    for i in range(rows):
        w = [_WORDS[j] for j in word[i]]
        title = ("The " if the[i] else "") + " ".join(x.title() for x in dict.fromkeys(w[: title_words[i]]))
        titles.append(title)
        originals.append(f"{_FOREIGN[foreign[i]].title()} {title}" if translated[i] else title)
        taglines.append("" if no_tagline[i] else f"Every {w[0]} has a {w[3]}.")
        overview = " ".join(f"A {w[4 + 3 * s]} {w[5 + 3 * s]} meets the {w[6 + 3 * s]} of {title}." for s in range(sentences[i]))
        overviews.append("" if no_overview[i] else overview)
    return {"media_title": titles, "original_media_title": originals, "tagline": taglines, "overview": overviews}


def _labels(rng: np.random.Generator, numbers: dict, lists: dict, movie: np.ndarray) -> list[str]:
    """Draw labels from the owner's preferences (seed 001), then fix the base rate at ~1:9."""

    def column(name: str, missing: float) -> np.ndarray:
        return np.array([missing if v is None else v for v in numbers[name]], dtype=float)

    votes = column("imdb_votes", 10.0)
    rt = column("rt_score", np.nan)
    year = np.asarray(numbers["release_year"])
    genres = [set(g or []) for g in lists["genre"]]
    has = lambda name: np.array([name in g for g in genres])  # noqa: E731
    english = np.array([lang == "en" for lang in lists["original_language"]])
    rt_known = ~np.isnan(rt)
    rt0 = np.nan_to_num(rt)

    # Popular films are the ones the owner watches: the real rate climbs from ~0
    # below 1,000 IMDb votes to ~0.9 above 100,000.
    # (no votes counts as one: large samples have rows with 0, whose log is -inf)
    logit = 2.8 * (np.log10(np.maximum(votes, 1.0)) - 4.45)
    # High RT score with few votes: a festival film the owner skips.
    logit -= 3.0 * (rt_known & (rt0 > 85) & (votes < 1_000))
    # High RT score with many votes: a strong yes.
    logit += 1.5 * (rt_known & (rt0 >= 80) & (votes > 50_000))
    # Comedies with a low RT score but many votes are often enjoyable.
    comedy = has("Comedy")
    logit += 2.5 * (comedy & rt_known & (rt0 < 50) & (votes > 50_000))
    logit -= 2.0 * (~comedy & rt_known & (rt0 < 50))
    # Action and drama need both a high RT score and many votes.
    logit -= 1.0 * ((has("Action") | has("Drama")) & ~(rt_known & (rt0 > 70) & (votes > 50_000)))
    # Not English: only when RT > 90 and more than 100,000 votes.
    exception = rt_known & (rt0 > 90) & (votes > 100_000)
    logit += np.where(english, 0.0, np.where(exception, 1.0, -5.0))
    logit -= 1.5 * has("Documentary") + 3.0 * has("TV Movie") + 0.7 * has("Horror")
    logit += 0.5 * ((year >= 1990) & (year < 2010))

    logit += _offset_for_rate(logit[movie], P_POSITIVE)
    positive = rng.random(movie.size) < expit(logit)
    # Series are mostly kept (41 of 45 in the real table).
    positive = np.where(movie, positive, rng.random(movie.size) < 0.9)
    return np.where(positive, schema.POSITIVE_LABEL, "would_not_watch").tolist()


def _review_state(rng: np.random.Generator, label: list[str]) -> tuple[np.ndarray, list[str | None]]:
    """Which rows a person reviewed, and the labels as the table holds them: a row nobody
    reviewed carries the media pipeline's answer (here the opposite of the owner's) or,
    for a new arrival, no label."""
    state = rng.random(len(label))
    unreviewed = state < P_UNREVIEWED
    unlabeled = (state >= P_UNREVIEWED) & (state < P_UNREVIEWED + P_UNLABELED)
    opposite = {schema.POSITIVE_LABEL: "would_not_watch", "would_not_watch": schema.POSITIVE_LABEL}
    held = [None if new else opposite[value] if wrong else value for value, wrong, new in zip(label, unreviewed, unlabeled)]
    return ~(unreviewed | unlabeled), held


def _offset_for_rate(logit: np.ndarray, rate: float) -> float:
    """The shift of ``logit`` whose mean probability is ``rate``."""
    return brentq(lambda shift: expit(logit + shift).mean() - rate, -30.0, 30.0)
