//! The PostgreSQL side: migrations, offsets, and writing one batch in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls, Transaction};
use sagaflow_avro::SagaEvent;

use crate::error::{Error, Result};
use crate::fold::{day_of, Applied, Fold, Observation, SagaRow, StepKey, StepRow};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A connection to the read models in one schema.
pub struct Store {
    client: Client,
    schema: String,
    /// Days whose `events` partition exists (created on demand).
    partitions: HashSet<i32>,
    /// Events older than this many days are not kept (their partitions are dropped).
    retention_days: u32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// One batch: decoded events and, per partition, where it started and where it ends.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<SagaEvent>,
    /// Partition → (the next offset the store must hold now, the next offset after the batch).
    pub ranges: BTreeMap<i32, (Option<i64>, i64)>,
    /// Partition → when its last record was written to the log (broker time, epoch ms).
    pub written_at: BTreeMap<i32, i64>,
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct Written {
    pub applied: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub expired: u64,
    pub observations: Vec<Observation>,
}

/// Longest schema name: PostgreSQL's identifier limit (63 bytes) less the `_rebuild` of the
/// side schema a rebuild projects into.
pub const MAX_SCHEMA_NAME: usize = 63 - "_rebuild".len();

/// A valid unquoted PostgreSQL identifier we create ourselves (a rebuild's side schema may be
/// longer than [`MAX_SCHEMA_NAME`]; it is checked against PostgreSQL's limit).
pub fn check_schema_name(schema: &str) -> Result<()> {
    let limit = if schema.ends_with("_rebuild") {
        63
    } else {
        MAX_SCHEMA_NAME
    };
    let ok = !schema.is_empty()
        && schema.len() <= limit
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "schema name `{schema}` is not usable: use lowercase letters, digits and `_`, starting with a letter, at most {MAX_SCHEMA_NAME} characters"
        )))
    }
}

pub(crate) fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).map_err(|source| Error::Connect {
        url: redact(url),
        source,
    })
}

/// Drops `schema` and everything in it (benchmarks clean up with it).
pub fn drop_schema(url: &str, schema: &str) -> Result<()> {
    check_schema_name(schema)?;
    connect(url)?
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .map_err(|e| Error::sql("dropping a schema", e))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Connects, creates the schema if needed and runs the migrations it lacks.
    pub fn open(url: &str, schema: &str, retention_days: u32) -> Result<Self> {
        check_schema_name(schema)?;
        let mut client = connect(url)?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
            ))
            .map_err(|e| Error::sql("preparing the schema", e))?;
        let report = embedded::migrations::runner()
            .run(&mut client)
            .map_err(|e| Error::Migration {
                schema: schema.to_string(),
                message: e.to_string(),
            })?;
        for m in report.applied_migrations() {
            tracing::info!(schema, migration = %m, "migration applied");
        }
        let mut store = Self {
            client,
            schema: schema.to_string(),
            partitions: HashSet::new(),
            retention_days,
        };
        store.drop_expired_partitions()?;
        Ok(store)
    }

    /// Whether the database closed the connection: then no query on it can succeed again.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The committed position of every partition of `topic` the store has seen.
    pub fn positions(&mut self, topic: &str) -> Result<BTreeMap<i32, i64>> {
        let rows = self
            .client
            .query(
                "SELECT partition, next_offset FROM projection_offsets WHERE topic = $1",
                &[&topic],
            )
            .map_err(|e| Error::sql("reading the projected offsets", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The first day whose events are kept.
    fn first_kept_day(&self) -> i32 {
        day_of(now_ms()) - i32::try_from(self.retention_days).unwrap_or(i32::MAX)
    }

    /// Drops the `events` partitions older than the retention.
    pub fn drop_expired_partitions(&mut self) -> Result<u32> {
        let rows = self
            .client
            .query(
                "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 JOIN pg_namespace n ON n.oid = p.relnamespace
                 WHERE p.relname = 'events' AND n.nspname = $1",
                &[&self.schema],
            )
            .map_err(|e| Error::sql("listing event partitions", e))?;
        let first = self.first_kept_day();
        let mut dropped = 0;
        for row in rows {
            let name: String = row.get(0);
            let Some(day) = name
                .strip_prefix("events_d")
                .and_then(|d| d.parse::<i32>().ok())
            else {
                continue;
            };
            if day < first {
                self.client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .map_err(|e| Error::sql("dropping an expired event partition", e))?;
                let _ = self.partitions.remove(&day);
                dropped += 1;
                tracing::info!(partition = %name, "expired event partition dropped");
            }
        }
        Ok(dropped)
    }

    /// Forgets which partitions exist (after an error, or after a rebuild swapped the tables).
    pub fn forget_partitions(&mut self) {
        self.partitions.clear();
    }

    /// Writes `batch` in one transaction with its offsets, after checking that no other
    /// projector moved them since this one last read them ([`Error::Fenced`]).
    pub fn write(&mut self, topic: &str, batch: &Batch) -> Result<Written> {
        let first_kept = self.first_kept_day();
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| Error::sql("starting a transaction", e))?;
        fence(&mut tx, topic, &batch.ranges)?;

        let ids: Vec<String> = batch
            .events
            .iter()
            .map(|e| e.saga_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut fold = Fold::default();
        load(&mut tx, &ids, &mut fold)?;
        let mut written = Written::default();
        let mut kept = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            match fold.apply(event) {
                Applied::Duplicate => written.duplicates += 1,
                Applied::AfterGap => {
                    written.gaps += 1;
                    written.applied += 1;
                }
                Applied::New => written.applied += 1,
            }
        }
        for event in std::mem::take(&mut fold.events) {
            if day_of(event.at) >= first_kept {
                kept.push(event);
            } else {
                written.expired += 1;
            }
        }
        let days: BTreeSet<i32> = kept.iter().map(|e| day_of(e.at)).collect();
        for day in days {
            if !self.partitions.contains(&day) {
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS events_d{day} PARTITION OF events
                     FOR VALUES FROM (date '1970-01-01' + {day}) TO (date '1970-01-01' + {next})",
                    next = day + 1
                ))
                .map_err(|e| Error::sql("creating an event partition", e))?;
            }
        }
        insert_events(&mut tx, &kept)?;
        upsert_sagas(&mut tx, &fold)?;
        upsert_steps(&mut tx, &fold)?;
        upsert_stats(&mut tx, &fold)?;
        save_positions(&mut tx, topic, &batch.ranges)?;
        tx.commit()
            .map_err(|e| Error::sql("committing a batch", e))?;
        self.partitions
            .extend(kept.iter().map(|e| day_of(e.at)).collect::<HashSet<_>>());
        written.observations = fold.observations;
        Ok(written)
    }

    /// Runs `sql` (one statement) and returns its column names and rows as text, NULL as
    /// empty: for tools that print what the read models say.
    pub fn query_text(&mut self, sql: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let messages = self
            .client
            .simple_query(sql)
            .map_err(|e| Error::sql("running a query", e))?;
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for m in messages {
            match m {
                postgres::SimpleQueryMessage::RowDescription(d) => {
                    columns = d.iter().map(|c| c.name().to_string()).collect();
                }
                postgres::SimpleQueryMessage::Row(r) => rows.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("").to_string())
                        .collect(),
                ),
                _ => {}
            }
        }
        Ok((columns, rows))
    }
}

fn fence(
    tx: &mut Transaction<'_>,
    topic: &str,
    ranges: &BTreeMap<i32, (Option<i64>, i64)>,
) -> Result<()> {
    let partitions: Vec<i32> = ranges.keys().copied().collect();
    // `FOR UPDATE` below locks only rows that exist: two projectors writing a partition's
    // first batch would both find none and both pass. A lock per schema and partition, taken
    // in order (`ranges` is sorted), serialises them, so the second finds the first one's row.
    for partition in &partitions {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/' || $1), $2)",
            &[&topic, partition],
        )
        .map_err(|e| Error::sql("locking the partition's projection", e))?;
    }
    let rows = tx
        .query(
            "SELECT partition, next_offset FROM projection_offsets
             WHERE topic = $1 AND partition = ANY($2) FOR UPDATE",
            &[&topic, &partitions],
        )
        .map_err(|e| Error::sql("locking the projected offsets", e))?;
    let stored: BTreeMap<i32, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (partition, (expected, _)) in ranges {
        let found = stored.get(partition).copied();
        if found != *expected {
            return Err(Error::Fenced {
                partition: *partition,
                expected: *expected,
                found,
            });
        }
    }
    Ok(())
}

/// Loads the batch's sagas (locked, so two projectors never fold the same saga at once) and
/// their open steps.
fn load(tx: &mut Transaction<'_>, ids: &[String], fold: &mut Fold) -> Result<()> {
    let rows = tx
        .query(
            "SELECT saga_id, definition, version, status,
                    (extract(epoch FROM started_at) * 1000)::int8,
                    (extract(epoch FROM ended_at) * 1000)::int8,
                    current_step, last_error_code, last_error_message,
                    attempts, compensations, retries, timeouts, business_keys::text, last_seq,
                    (extract(epoch FROM updated_at) * 1000)::int8
             FROM sagas WHERE saga_id = ANY($1) FOR UPDATE",
            &[&ids],
        )
        .map_err(|e| Error::sql("loading sagas", e))?;
    for r in rows {
        let keys: String = r.get(13);
        let row = SagaRow {
            saga_id: r.get(0),
            definition: r.get(1),
            version: r.get(2),
            status: r.get(3),
            started_at: r.get(4),
            ended_at: r.get(5),
            current_step: r.get(6),
            last_error_code: r.get(7),
            last_error_message: r.get(8),
            attempts: r.get(9),
            compensations: r.get(10),
            retries: r.get(11),
            timeouts: r.get(12),
            business_keys: serde_json::from_str(&keys).unwrap_or_default(),
            last_seq: r.get(14),
            updated_at: r.get(15),
        };
        let _ = fold.sagas.insert(row.saga_id.clone(), row);
    }
    let rows = tx
        .query(
            "SELECT saga_id, step, phase, attempt, definition, node, status,
                    (extract(epoch FROM started_at) * 1000)::int8, error_code
             FROM steps WHERE saga_id = ANY($1) AND ended_at IS NULL",
            &[&ids],
        )
        .map_err(|e| Error::sql("loading open steps", e))?;
    for r in rows {
        let key = StepKey {
            saga_id: r.get(0),
            step: r.get(1),
            phase: phase_name(r.get(2)),
            attempt: r.get(3),
        };
        let row = StepRow {
            definition: r.get(4),
            node: r.get(5),
            status: status_name(r.get(6)),
            started_at: r.get(7),
            ended_at: None,
            duration_ms: None,
            error_code: r.get(8),
        };
        let _ = fold.steps.insert(key, row);
    }
    Ok(())
}

fn phase_name(phase: &str) -> &'static str {
    match phase {
        "compensation" => "compensation",
        "branch" => "branch",
        _ => "forward",
    }
}

fn status_name(status: &str) -> &'static str {
    match status {
        "WAITING" => "WAITING",
        _ => "RUNNING",
    }
}

fn insert_events(tx: &mut Transaction<'_>, events: &[SagaEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    let mut types = Vec::new();
    let mut ats = Vec::new();
    let mut definitions = Vec::new();
    let mut versions = Vec::new();
    let mut steps = Vec::new();
    let mut attempts = Vec::new();
    let mut statuses = Vec::new();
    let mut dues = Vec::new();
    let mut details = Vec::new();
    let mut inputs = Vec::new();
    for e in events {
        ids.push(e.saga_id.as_str());
        seqs.push(e.seq);
        types.push(e.event_type.symbol());
        ats.push(e.at);
        definitions.push(e.definition.as_str());
        versions.push(e.version);
        steps.push(e.step.as_deref());
        attempts.push(e.attempt);
        statuses.push(e.status.as_deref());
        dues.push(e.due);
        details.push(json_or_null(e.detail_json.as_deref()));
        inputs.push(json_or_null(e.input_json.as_deref()));
    }
    tx.execute(
        "INSERT INTO events (saga_id, seq, type, at, definition, version, step, attempt, status,
                             due, detail, input)
         SELECT i, s, t, to_timestamp(a / 1000.0), d, v, st, att, stat,
                to_timestamp(du / 1000.0), de::jsonb, inp::jsonb
         FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::text[], $6::int4[],
                     $7::text[], $8::int4[], $9::text[], $10::int8[], $11::text[], $12::text[])
              AS x(i, s, t, a, d, v, st, att, stat, du, de, inp)
         ON CONFLICT DO NOTHING",
        &[
            &ids,
            &seqs,
            &types,
            &ats,
            &definitions,
            &versions,
            &steps,
            &attempts,
            &statuses,
            &dues,
            &details,
            &inputs,
        ],
    )
    .map_err(|e| Error::sql("inserting events", e))?;
    Ok(())
}

/// The text if it is JSON, else the text as a JSON string (an event is never dropped for a
/// malformed detail).
fn json_or_null(text: Option<&str>) -> Option<String> {
    let text = text?;
    Some(match serde_json::from_str::<serde_json::Value>(text) {
        Ok(_) => text.to_string(),
        Err(_) => serde_json::Value::String(text.to_string()).to_string(),
    })
}

fn upsert_sagas(tx: &mut Transaction<'_>, fold: &Fold) -> Result<()> {
    let mut changed: Vec<&SagaRow> = fold
        .changed_sagas
        .iter()
        .filter_map(|id| fold.sagas.get(id))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    // One order for every writer: two projectors never deadlock on each other's rows.
    changed.sort_by(|a, b| a.saga_id.cmp(&b.saga_id));
    let col = |f: fn(&SagaRow) -> Option<String>| changed.iter().map(|s| f(s)).collect::<Vec<_>>();
    let ids = col(|s| Some(s.saga_id.clone()));
    let definitions = col(|s| Some(s.definition.clone()));
    let statuses = col(|s| Some(s.status.clone()));
    let current = col(|s| s.current_step.clone());
    let codes = col(|s| s.last_error_code.clone());
    let messages = col(|s| s.last_error_message.clone());
    let keys = col(|s| Some(s.business_keys.to_string()));
    let versions: Vec<i32> = changed.iter().map(|s| s.version).collect();
    let started: Vec<i64> = changed.iter().map(|s| s.started_at).collect();
    let ended: Vec<Option<i64>> = changed.iter().map(|s| s.ended_at).collect();
    let counts = |f: fn(&SagaRow) -> i32| changed.iter().map(|s| f(s)).collect::<Vec<i32>>();
    let attempts = counts(|s| s.attempts);
    let compensations = counts(|s| s.compensations);
    let retries = counts(|s| s.retries);
    let timeouts = counts(|s| s.timeouts);
    let seqs: Vec<i64> = changed.iter().map(|s| s.last_seq).collect();
    let updated: Vec<i64> = changed.iter().map(|s| s.updated_at).collect();
    tx.execute(
        "INSERT INTO sagas (saga_id, definition, version, status, started_at, ended_at,
                            duration_ms, current_step, last_error_code, last_error_message,
                            attempts, compensations, retries, timeouts, business_keys, last_seq,
                            updated_at)
         SELECT i, d, v, st, to_timestamp(sa / 1000.0), to_timestamp(ea / 1000.0), ea - sa, cs,
                ec, em, a, c, r, t, bk::jsonb, ls, to_timestamp(ua / 1000.0)
         FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::int8[],
                     $7::text[], $8::text[], $9::text[], $10::int4[], $11::int4[], $12::int4[],
                     $13::int4[], $14::text[], $15::int8[], $16::int8[])
              AS x(i, d, v, st, sa, ea, cs, ec, em, a, c, r, t, bk, ls, ua)
         ON CONFLICT (saga_id) DO UPDATE SET
            definition = EXCLUDED.definition, version = EXCLUDED.version,
            status = EXCLUDED.status, started_at = EXCLUDED.started_at,
            ended_at = EXCLUDED.ended_at, duration_ms = EXCLUDED.duration_ms,
            current_step = EXCLUDED.current_step, last_error_code = EXCLUDED.last_error_code,
            last_error_message = EXCLUDED.last_error_message, attempts = EXCLUDED.attempts,
            compensations = EXCLUDED.compensations, retries = EXCLUDED.retries,
            timeouts = EXCLUDED.timeouts, business_keys = EXCLUDED.business_keys,
            last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at",
        &[
            &ids,
            &definitions,
            &versions,
            &statuses,
            &started,
            &ended,
            &current,
            &codes,
            &messages,
            &attempts,
            &compensations,
            &retries,
            &timeouts,
            &keys,
            &seqs,
            &updated,
        ],
    )
    .map_err(|e| Error::sql("writing sagas", e))?;
    Ok(())
}

fn upsert_steps(tx: &mut Transaction<'_>, fold: &Fold) -> Result<()> {
    let mut changed: Vec<(&StepKey, &StepRow)> = fold
        .changed_steps
        .iter()
        .filter_map(|k| fold.steps.get(k).map(|row| (k, row)))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    changed.sort_by(|a, b| a.0.cmp(b.0));
    let ids: Vec<&str> = changed.iter().map(|(k, _)| k.saga_id.as_str()).collect();
    let steps: Vec<&str> = changed.iter().map(|(k, _)| k.step.as_str()).collect();
    let phases: Vec<&str> = changed.iter().map(|(k, _)| k.phase).collect();
    let attempts: Vec<i32> = changed.iter().map(|(k, _)| k.attempt).collect();
    let definitions: Vec<&str> = changed.iter().map(|(_, r)| r.definition.as_str()).collect();
    let nodes: Vec<&str> = changed.iter().map(|(_, r)| r.node.as_str()).collect();
    let statuses: Vec<&str> = changed.iter().map(|(_, r)| r.status).collect();
    let started: Vec<Option<i64>> = changed.iter().map(|(_, r)| r.started_at).collect();
    let ended: Vec<Option<i64>> = changed.iter().map(|(_, r)| r.ended_at).collect();
    let durations: Vec<Option<i64>> = changed.iter().map(|(_, r)| r.duration_ms).collect();
    let codes: Vec<Option<&str>> = changed
        .iter()
        .map(|(_, r)| r.error_code.as_deref())
        .collect();
    // A row that ended in an earlier batch is not loaded: its first start and end stay, and a
    // later event (a timeout, then the failure it led to) updates its status and error only.
    tx.execute(
        "INSERT INTO steps (saga_id, step, phase, attempt, definition, node, status, started_at,
                            ended_at, duration_ms, error_code)
         SELECT i, s, p, a, d, n, st, to_timestamp(sa / 1000.0), to_timestamp(ea / 1000.0), du,
                ec
         FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::text[],
                     $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::text[])
              AS x(i, s, p, a, d, n, st, sa, ea, du, ec)
         ON CONFLICT (saga_id, step, phase, attempt) DO UPDATE SET
            status = EXCLUDED.status,
            started_at = coalesce(steps.started_at, EXCLUDED.started_at),
            ended_at = coalesce(steps.ended_at, EXCLUDED.ended_at),
            duration_ms = coalesce(steps.duration_ms, EXCLUDED.duration_ms),
            error_code = coalesce(EXCLUDED.error_code, steps.error_code)",
        &[
            &ids,
            &steps,
            &phases,
            &attempts,
            &definitions,
            &nodes,
            &statuses,
            &started,
            &ended,
            &durations,
            &codes,
        ],
    )
    .map_err(|e| Error::sql("writing steps", e))?;
    Ok(())
}

fn upsert_stats(tx: &mut Transaction<'_>, fold: &Fold) -> Result<()> {
    if !fold.status_counts.is_empty() {
        let definitions: Vec<&str> = fold.status_counts.keys().map(|k| k.0.as_str()).collect();
        let days: Vec<i32> = fold.status_counts.keys().map(|k| k.1).collect();
        let statuses: Vec<&str> = fold.status_counts.keys().map(|k| k.2.as_str()).collect();
        let sagas: Vec<i64> = fold.status_counts.values().map(|v| v.0).collect();
        let sums: Vec<i64> = fold.status_counts.values().map(|v| v.1).collect();
        tx.execute(
            "INSERT INTO daily_status_counts (definition, day, status, sagas, duration_ms_sum)
             SELECT d, date '1970-01-01' + dy, st, n, su
             FROM unnest($1::text[], $2::int4[], $3::text[], $4::int8[], $5::int8[])
                  AS x(d, dy, st, n, su)
             ON CONFLICT (definition, day, status) DO UPDATE SET
                sagas = daily_status_counts.sagas + EXCLUDED.sagas,
                duration_ms_sum = daily_status_counts.duration_ms_sum + EXCLUDED.duration_ms_sum",
            &[&definitions, &days, &statuses, &sagas, &sums],
        )
        .map_err(|e| Error::sql("writing daily counts", e))?;
    }
    if !fold.durations.is_empty() {
        let definitions: Vec<&str> = fold.durations.keys().map(|k| k.0.as_str()).collect();
        let days: Vec<i32> = fold.durations.keys().map(|k| k.1).collect();
        let statuses: Vec<&str> = fold.durations.keys().map(|k| k.2.as_str()).collect();
        let buckets: Vec<i16> = fold.durations.keys().map(|k| k.3).collect();
        let sagas: Vec<i64> = fold.durations.values().copied().collect();
        tx.execute(
            "INSERT INTO daily_durations (definition, day, status, bucket, sagas)
             SELECT d, date '1970-01-01' + dy, st, b, n
             FROM unnest($1::text[], $2::int4[], $3::text[], $4::int2[], $5::int8[])
                  AS x(d, dy, st, b, n)
             ON CONFLICT (definition, day, status, bucket) DO UPDATE SET
                sagas = daily_durations.sagas + EXCLUDED.sagas",
            &[&definitions, &days, &statuses, &buckets, &sagas],
        )
        .map_err(|e| Error::sql("writing daily durations", e))?;
    }
    Ok(())
}

fn save_positions(
    tx: &mut Transaction<'_>,
    topic: &str,
    ranges: &BTreeMap<i32, (Option<i64>, i64)>,
) -> Result<()> {
    let partitions: Vec<i32> = ranges.keys().copied().collect();
    let offsets: Vec<i64> = ranges.values().map(|r| r.1).collect();
    tx.execute(
        "INSERT INTO projection_offsets (topic, partition, next_offset)
         SELECT $1, p, o FROM unnest($2::int4[], $3::int8[]) AS x(p, o)
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        &[&topic, &partitions, &offsets],
    )
    .map_err(|e| Error::sql("saving offsets", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_name_leaves_room_for_its_rebuild() {
        let longest = "s".repeat(MAX_SCHEMA_NAME);
        check_schema_name(&longest).expect("the longest name");
        check_schema_name(&format!("{longest}_rebuild")).expect("its rebuild's side schema");
        let err = check_schema_name(&format!("{longest}s"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 55 characters"), "{err}");
        assert!(check_schema_name("Live").is_err());
    }
}
