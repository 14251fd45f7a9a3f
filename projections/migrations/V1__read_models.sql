-- Read models of the saga event log. Every value derives from the events alone (no wall
-- clock), so a rebuild from offset 0 gives the same rows as incremental projection.
-- Statuses and business keys are data (text, jsonb): a status a later engine adds needs no
-- migration.

-- Where each event-log partition has been projected up to: written in the same transaction
-- as the rows, so a restart resumes exactly where the last commit ended.
CREATE TABLE projection_offsets (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE sagas (
    saga_id            text        PRIMARY KEY,
    definition         text        NOT NULL,
    version            int         NOT NULL,
    status             text        NOT NULL,
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz,
    duration_ms        bigint,
    -- The node of the latest event that named one (a step, a branch, a for_each element).
    current_step       text,
    last_error_code    text,
    last_error_message text,
    -- Command attempts sent, forward and compensating; retries and timeouts among them.
    attempts           int         NOT NULL DEFAULT 0,
    compensations      int         NOT NULL DEFAULT 0,
    retries            int         NOT NULL DEFAULT 0,
    timeouts           int         NOT NULL DEFAULT 0,
    -- The definition's `index:` business keys, name to value.
    business_keys      jsonb       NOT NULL DEFAULT '{}',
    -- The last event applied: a redelivered event (seq <= last_seq) is a no-op.
    last_seq           bigint      NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX sagas_by_definition ON sagas (definition, version, started_at DESC, saga_id DESC);
CREATE INDEX sagas_by_status ON sagas (status, started_at DESC, saga_id DESC);
CREATE INDEX sagas_by_start ON sagas (started_at DESC, saga_id DESC);
CREATE INDEX sagas_by_error ON sagas (last_error_code) WHERE last_error_code IS NOT NULL;
CREATE INDEX sagas_open ON sagas (definition, status) WHERE ended_at IS NULL;
CREATE INDEX sagas_by_key ON sagas USING gin (business_keys jsonb_path_ops);

-- One row per node instance, phase and attempt. `phase` is forward, compensation or branch;
-- `attempt` is 0 for nodes without attempts (waits, awaits, parallel, choice, for_each).
CREATE TABLE steps (
    saga_id     text        NOT NULL,
    step        text        NOT NULL,
    phase       text        NOT NULL,
    attempt     int         NOT NULL,
    definition  text        NOT NULL,
    -- The definition's step name: `step` without a for_each index or branch (`flight[3]` is
    -- `flight`), for grouping across instances.
    node        text        NOT NULL,
    status      text        NOT NULL,
    started_at  timestamptz,
    ended_at    timestamptz,
    duration_ms bigint,
    error_code  text,
    PRIMARY KEY (saga_id, step, phase, attempt)
);
CREATE INDEX steps_by_node ON steps (definition, node, phase);

-- The whole history, one partition per UTC day; partitions older than the retention are
-- dropped (`--events-retention-days`).
CREATE TABLE events (
    saga_id    text        NOT NULL,
    seq        bigint      NOT NULL,
    type       text        NOT NULL,
    at         timestamptz NOT NULL,
    definition text        NOT NULL,
    version    int         NOT NULL,
    step       text,
    attempt    int,
    status     text,
    due        timestamptz,
    detail     jsonb,
    input      jsonb,
    PRIMARY KEY (saga_id, seq, at)
) PARTITION BY RANGE (at);

-- How many sagas of each definition entered each status on each UTC day (RUNNING counts the
-- starts), and for ended sagas their durations in log-scale buckets (see bucket_ms).
CREATE TABLE daily_status_counts (
    definition  text   NOT NULL,
    day         date   NOT NULL,
    status      text   NOT NULL,
    sagas       bigint NOT NULL,
    duration_ms_sum bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (definition, day, status)
);
CREATE TABLE daily_durations (
    definition text     NOT NULL,
    day        date     NOT NULL,
    status     text     NOT NULL,
    bucket     smallint NOT NULL,
    sagas      bigint   NOT NULL,
    PRIMARY KEY (definition, day, status, bucket)
);

-- The representative duration of a bucket: bucket b holds durations d with
-- floor(ln(d + 1) / ln(1.05)) = b, so the geometric middle of its bounds, rounded, is within
-- 2.5% plus 1 ms of every duration in it (projections/tests/fold.rs checks it).
CREATE FUNCTION bucket_ms(b int) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT sqrt(power(1.05, b) * power(1.05, b + 1)) - 1 $$;

-- Per definition and UTC day: starts, outcomes, and duration percentiles of the sagas that
-- ended that day.
CREATE VIEW daily_stats AS
WITH histogram AS (
    SELECT definition, day, bucket, sum(sagas)::bigint AS sagas
    FROM daily_durations GROUP BY definition, day, bucket
), cumulative AS (
    SELECT definition, day, bucket,
           sum(sagas) OVER (PARTITION BY definition, day ORDER BY bucket) AS below,
           sum(sagas) OVER (PARTITION BY definition, day) AS total
    FROM histogram
), percentiles AS (
    SELECT definition, day,
           round(bucket_ms(min(bucket) FILTER (WHERE below >= ceil(0.50 * total)))) AS p50_ms,
           round(bucket_ms(min(bucket) FILTER (WHERE below >= ceil(0.95 * total)))) AS p95_ms,
           round(bucket_ms(min(bucket) FILTER (WHERE below >= ceil(0.99 * total)))) AS p99_ms
    FROM cumulative GROUP BY definition, day
), counts AS (
    SELECT definition, day,
           coalesce(sum(sagas) FILTER (WHERE status = 'RUNNING'), 0)::bigint AS started,
           coalesce(sum(sagas) FILTER (WHERE status = 'COMPLETED'), 0)::bigint AS completed,
           coalesce(sum(sagas) FILTER (WHERE status = 'COMPENSATED'), 0)::bigint AS compensated,
           coalesce(sum(sagas) FILTER (WHERE status = 'FAILED'), 0)::bigint AS failed,
           coalesce(sum(sagas) FILTER (WHERE status = 'ABORTED'), 0)::bigint AS aborted,
           jsonb_object_agg(status, sagas) AS by_status
    FROM daily_status_counts GROUP BY definition, day
)
SELECT c.definition, c.day, c.started, c.completed, c.compensated, c.failed, c.aborted,
       c.by_status, p.p50_ms, p.p95_ms, p.p99_ms
FROM counts c LEFT JOIN percentiles p USING (definition, day);
