-- A copy of the production DDL (shared/schema/atp_training.sql), so that a
-- clone without ../shared can run the PostgreSQL tests.
-- The labeled media table that the pipeline trains on, as the media-acquisition
-- service keeps it in PostgreSQL (schema "atp"). Column names, types and
-- constraints are the production ones; use this to build test databases.
--
-- Notes for readers of this table:
-- * label and media_type are PostgreSQL enums, not text.
-- * tmdb_rating and imdb_rating are NUMERIC (DECIMAL), not float.
-- * origin_country, production_countries and spoken_languages are CHAR(2)[]
--   (blank-padded fixed width); genre and production_companies are VARCHAR[].
--   Arrays and their elements may be NULL; arrays may be empty.
-- * budget, revenue and runtime use 0 for "unknown" as often as NULL.
-- * The table as deployed today (below) differs from older deployments:
--   - reviewed: TRUE once a person has confirmed the row's label. It decides
--     which rows belong in the training set. The media pipeline writes the
--     model's own decision into label for rows that no person has labeled
--     (human_labeled FALSE) and leaves reviewed FALSE: training on those rows
--     would teach the model its own past answers.
--   - label is nullable: a new arrival has no label until it is scored or
--     reviewed. Rows without a label are never training rows.
--   - media_type has a fourth value, tv_episode_pack.
--   Older deployments lack reviewed, human_labeled and anomalous (and have
--   label NOT NULL): an extract must work with or without them.
-- * When a person changes a label, human_labeled and reviewed both become
--   TRUE. anomalous marks a verified label that models keep getting wrong.
-- * The real export in ../data/atp_training.parquet was taken from a
--   deployment without the flag columns; every row in it was reviewed.
-- * The predictions that training writes back go to atp.prediction
--   (atp_prediction.sql), which a view joins to this table.

CREATE SCHEMA IF NOT EXISTS atp;

CREATE TYPE atp.media_type AS ENUM ('movie', 'tv_show', 'tv_season', 'tv_episode_pack');
CREATE TYPE atp.label_type AS ENUM ('would_watch', 'would_not_watch');

CREATE TABLE atp.training (
    imdb_id              VARCHAR(10) PRIMARY KEY CHECK (imdb_id ~ '^tt[0-9]{7,8}$'),
    tmdb_id              INTEGER CHECK (tmdb_id > 0),  -- not unique in practice: two IMDb ids can share one
    label                atp.label_type,                  -- NULL: not labeled yet
    media_type           atp.media_type NOT NULL,
    media_title          VARCHAR(255) NOT NULL,
    season               SMALLINT,
    episode              SMALLINT,
    release_year         SMALLINT NOT NULL CHECK (release_year BETWEEN 1850 AND 2100),
    budget               BIGINT CHECK (budget >= 0),
    revenue              BIGINT CHECK (revenue >= 0),
    runtime              INTEGER CHECK (runtime >= 0),
    origin_country       CHAR(2)[],
    production_companies VARCHAR(255)[],
    production_countries CHAR(2)[],
    production_status    VARCHAR(25),
    original_language    CHAR(2),
    spoken_languages     CHAR(2)[],
    genre                VARCHAR(20)[],
    original_media_title VARCHAR(255),
    tagline              VARCHAR(255),
    overview             TEXT,
    tmdb_rating          DECIMAL(5,3) CHECK (tmdb_rating BETWEEN 0 AND 10),
    tmdb_votes           INTEGER CHECK (tmdb_votes >= 0),
    rt_score             INTEGER CHECK (rt_score IS NULL OR rt_score BETWEEN 0 AND 100),
    metascore            INTEGER CHECK (metascore IS NULL OR metascore BETWEEN 0 AND 100),
    imdb_rating          DECIMAL(4,1) CHECK (imdb_rating IS NULL OR imdb_rating BETWEEN 0 AND 100),
    imdb_votes           INTEGER CHECK (imdb_votes >= 0),
    human_labeled        BOOLEAN NOT NULL DEFAULT FALSE,  -- a person set or changed the label
    anomalous            BOOLEAN NOT NULL DEFAULT FALSE,  -- verified-correct item that models keep getting wrong; keep out of training
    reviewed             BOOLEAN DEFAULT FALSE,           -- a person confirmed the label: only these rows are training rows
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ON atp.training (tmdb_id);
CREATE INDEX ON atp.training (updated_at);
