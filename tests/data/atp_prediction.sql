-- A copy of the owner's predictions table and review view (shared/schema/atp_prediction.sql),
-- so that a clone without ../shared can run the publish tests.
-- Where training's predictions go back, as the production database has it
-- (schema "atp"), and the view that the owner's review screens read.
-- One row per labeled movie; the whole table is replaced by each publish.
-- Other tools read the view, so the table must keep its name and these
-- columns (a publish may add columns, never drop or retype these).

CREATE TABLE atp.prediction (
    imdb_id     VARCHAR(10) PRIMARY KEY CHECK (imdb_id ~ '^tt[0-9]{7,8}$'),
    prediction  SMALLINT NOT NULL CHECK (prediction IN (0, 1)),  -- 1 = would_watch
    probability DECIMAL NOT NULL,                                 -- of would_watch, 0 to 1
    cm_value    CHAR(2) NOT NULL,                                 -- tp, fp, tn or fn
    created_at  TIMESTAMPTZ NOT NULL DEFAULT (CURRENT_TIMESTAMP AT TIME ZONE 'UTC')
);

-- The review screens list movies with their label and the model's view of them.
CREATE VIEW atp.movies AS
SELECT t.imdb_id, t.tmdb_id, t.label, t.human_labeled, t.anomalous, t.reviewed,
       t.media_type, t.media_title, t.release_year, t.genre,
       t.tmdb_rating, t.tmdb_votes, t.rt_score, t.metascore, t.imdb_rating, t.imdb_votes,
       p.prediction, p.probability, p.cm_value,
       t.created_at AS training_created_at, t.updated_at AS training_updated_at,
       p.created_at AS prediction_created_at
FROM atp.training t
JOIN atp.prediction p ON t.imdb_id = p.imdb_id;
