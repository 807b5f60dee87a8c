//! Durable progress, kept in the target database's `heroku2rds` schema and committed in the same
//! transactions as the data it describes: a crash never records work that did not happen, and any
//! machine with the target URL can read progress or resume.

use serde::Serialize;
use tokio_postgres::{Client, GenericClient};

use crate::error::{Cause, Error, Kind, Result};
use crate::pg::conn::query_error;

/// Each replicated table's mode (`copy`, `recopy`, `exclude`) by its state id.
pub async fn table_modes(client: &Client) -> Result<std::collections::HashMap<i32, String>> {
    Ok(client
        .query("SELECT id, mode FROM heroku2rds.tables", &[])
        .await
        .map_err(|e| query_error(e, "reading table modes"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The follower's last report, as written by `replicate` while following.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowReport {
    /// When it last reported (seconds since the epoch; 0 before its first report).
    pub updated_at: f64,
    /// Whether the change log held nothing committed at that report.
    pub caught_up: bool,
    /// Why it stopped, if it did.
    pub stopped_reason: Option<String>,
}

/// The follower's last report (None before following ever started).
pub async fn follow_report(client: &Client) -> Result<Option<FollowReport>> {
    Ok(client
        .query_opt(
            "SELECT coalesce(extract(epoch FROM updated_at)::float8, 0), caught_up, stopped_reason
             FROM heroku2rds.follow",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the follower's progress"))?
        .map(|r| FollowReport {
            updated_at: r.get(0),
            caught_up: r.get(1),
            stopped_reason: r.get(2),
        }))
}

/// Brings the records of a migration started by an older version up to date (idempotent).
pub async fn upgrade(client: &Client) -> Result<()> {
    let missing: bool = client
        .query_one(
            "SELECT to_regclass('heroku2rds.follow') IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute
                     WHERE attrelid = to_regclass('heroku2rds.follow') AND attname = 'switched_at')",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the migration records"))?
        .get(0);
    if missing {
        client
            .batch_execute(
                "ALTER TABLE heroku2rds.follow ADD COLUMN IF NOT EXISTS switched_at timestamptz",
            )
            .await
            .map_err(|e| query_error(e, "upgrading the migration records"))?;
    }
    // Continuous verification's records (migrations started before it existed lack them).
    let verification: bool = client
        .query_one(
            "SELECT to_regclass('heroku2rds.tables') IS NOT NULL AND to_regclass('heroku2rds.verify_stats') IS NULL",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the migration records"))?
        .get(0);
    if verification {
        client
            .batch_execute(crate::pg::verify::ranges::DDL)
            .await
            .map_err(|e| query_error(e, "upgrading the migration records"))?;
    }
    Ok(())
}

/// When the app was switched to the target (seconds since the epoch), if it was: from then on
/// nothing may be applied from the old database.
pub async fn switched_at(client: &Client) -> Result<Option<f64>> {
    let has_column: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                             WHERE attrelid = to_regclass('heroku2rds.follow') AND attname = 'switched_at')",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the switch record"))?
        .get(0);
    if !has_column {
        return Ok(None);
    }
    Ok(client
        .query_opt(
            "SELECT extract(epoch FROM switched_at)::float8 FROM heroku2rds.follow WHERE switched_at IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the switch record"))?
        .map(|r| r.get(0)))
}

/// The error every follower stops with once the app was switched to the target.
pub fn switched_error(at: Option<f64>) -> Error {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let when = at
        .map(|s| format!(" {:.0}s ago", (now - s).max(0.0)))
        .unwrap_or_default();
    Error::new(
        Kind::Blocked,
        format!(
            "the app was switched to the target{when}: following the Heroku database stopped for good (applying it now would overwrite the app's new writes)"
        ),
    )
    .with_cause(Cause::Switched)
    .with_fix("nothing to do: the migration is complete; `heroku2rds clean --source ...` removes the capture and the write fence from the Heroku database")
}

/// Records the point of no return of cutover `id` and, in the same statement, the switch on
/// the follow row: an apply batch in flight either commits before (the switch waits for its row
/// lock) or updates nothing after it and rolls back. Returns the step's time.
pub async fn record_switch(client: &Client, id: i32, detail: &serde_json::Value) -> Result<f64> {
    let row = client
        .query_one(
            "WITH sw AS (UPDATE heroku2rds.follow SET switched_at = coalesce(switched_at, clock_timestamp()) RETURNING 1),
                  ins AS (INSERT INTO heroku2rds.cutover_steps (cutover_id, step, detail) VALUES ($1, $2, $3)
                          ON CONFLICT DO NOTHING RETURNING at)
             SELECT extract(epoch FROM coalesce((SELECT at FROM ins),
                    (SELECT at FROM heroku2rds.cutover_steps WHERE cutover_id = $1 AND step = $2)))::float8,
                    (SELECT count(*) FROM sw)",
            &[&id, &"point-of-no-return", detail],
        )
        .await
        .map_err(|e| query_error(e, "recording the switch"))?;
    Ok(row.get(0))
}

/// True once the cutover's record tables exist on the target.
pub async fn has_cutover_records(client: &Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass('heroku2rds.cutovers') IS NOT NULL", &[])
        .await
        .map_err(|e| query_error(e, "reading the cutover records"))?
        .get(0))
}

/// DDL of the state schema. Idempotent.
pub const STATE_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS heroku2rds;
CREATE TABLE IF NOT EXISTS heroku2rds.migration (
    id              int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    source          text NOT NULL,
    phase           text NOT NULL,
    keyless         text NOT NULL,
    pre_data        text NOT NULL,
    post_data       text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    copy_started_at timestamptz,
    copied_at       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS heroku2rds.tables (
    id          serial PRIMARY KEY,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    definition  jsonb NOT NULL,
    mode        text NOT NULL,
    est_rows    bigint NOT NULL,
    est_bytes   bigint NOT NULL,
    UNIQUE (schema_name, table_name)
);
CREATE TABLE IF NOT EXISTS heroku2rds.chunks (
    table_id   int NOT NULL REFERENCES heroku2rds.tables(id),
    chunk_no   int NOT NULL,
    kind       text NOT NULL,
    lo         bigint,
    hi         bigint,
    est_bytes  bigint NOT NULL,
    rows       bigint,
    bytes      bigint,
    done_at    timestamptz,
    PRIMARY KEY (table_id, chunk_no)
);
CREATE TABLE IF NOT EXISTS heroku2rds.schema_items (
    ordinal     int PRIMARY KEY,
    object_type text NOT NULL,
    header      text NOT NULL,
    done_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS heroku2rds.follow (
    id              int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    applied_changes bigint NOT NULL DEFAULT 0,
    applied_rows    bigint NOT NULL DEFAULT 0,
    last_apply_at   timestamptz,
    backlog         bigint,
    oldest_change_s float8,
    caught_up       boolean NOT NULL DEFAULT false,
    stopped_reason  text,
    updated_at      timestamptz,
    switched_at     timestamptz
);
INSERT INTO heroku2rds.follow (id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS heroku2rds.events (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    phase   text NOT NULL,
    message text NOT NULL
);
"#;

/// Phases of `replicate`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Copying table data in chunks.
    Copying,
    /// Building indexes, constraints and triggers.
    PostData,
    /// ANALYZE, sequences, materialized views.
    Finishing,
    /// Every table copied; the target is complete as of the copy.
    Copied,
}

impl Phase {
    /// Name stored in the state table.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::PostData => "post-data",
            Phase::Finishing => "finishing",
            Phase::Copied => "copied",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "copying" => Phase::Copying,
            "post-data" => Phase::PostData,
            "finishing" => Phase::Finishing,
            "copied" => Phase::Copied,
            other => {
                return Err(Error::other(format!(
                    "unknown phase `{other}` in the target's heroku2rds.migration"
                )))
            }
        })
    }
}

/// The stored migration row.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Source identity (`user@host:port/db`, no password).
    pub source: String,
    /// Current phase.
    pub phase: Phase,
    /// Keyless mode chosen at start.
    pub keyless: String,
    /// Post-data script.
    pub post_data: String,
}

/// Reads the migration row, or None when the target holds no migration.
pub async fn load(client: &Client) -> Result<Option<Migration>> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('heroku2rds.migration') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading migration state"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT source, phase, keyless, post_data FROM heroku2rds.migration",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading migration state"))?;
    row.map(|r| {
        Ok(Migration {
            source: r.get(0),
            phase: Phase::parse(r.get(1))?,
            keyless: r.get(2),
            post_data: r.get(3),
        })
    })
    .transpose()
}

/// Moves the migration to `phase` and records the event.
pub async fn set_phase(client: &impl GenericClient, phase: Phase) -> Result<()> {
    let extra = match phase {
        Phase::Copying => ", copy_started_at = coalesce(copy_started_at, now())",
        Phase::Copied => ", copied_at = now()",
        _ => "",
    };
    client
        .execute(
            &format!("UPDATE heroku2rds.migration SET phase = $1, updated_at = now(){extra}"),
            &[&phase.as_str()],
        )
        .await
        .map_err(|e| query_error(e, "recording the phase"))?;
    event(client, phase, &format!("phase {}", phase.as_str())).await
}

/// Appends an event (never row data, never secrets).
pub async fn event(client: &impl GenericClient, phase: Phase, message: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO heroku2rds.events (phase, message) VALUES ($1, $2)",
            &[&phase.as_str(), &message],
        )
        .await
        .map_err(|e| query_error(e, "recording an event"))?;
    Ok(())
}

/// DDL of the cutover's records (see `cutover.rs`). Idempotent; needs [`STATE_DDL`] first.
/// Holds no secrets: no URL, no token, only names, quantities and times.
pub const CUTOVER_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS heroku2rds.cutovers (
    id                 serial PRIMARY KEY,
    app                text NOT NULL,
    addon_id           text NOT NULL,
    addon_name         text NOT NULL,
    formation          jsonb NOT NULL,
    maintenance_before boolean NOT NULL,
    previous_existed   boolean NOT NULL,
    outcome            text CHECK (outcome IN ('completed', 'rolled-back')),
    reason             text,
    started_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at        timestamptz
);
ALTER TABLE heroku2rds.follow ADD COLUMN IF NOT EXISTS switched_at timestamptz;
CREATE TABLE IF NOT EXISTS heroku2rds.cutover_steps (
    cutover_id int NOT NULL REFERENCES heroku2rds.cutovers(id),
    step       text NOT NULL,
    detail     jsonb,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (cutover_id, step)
);
"#;

/// One recorded cutover attempt.
#[derive(Debug, Clone)]
pub struct CutoverRecord {
    /// Attempt id.
    pub id: i32,
    /// Heroku app.
    pub app: String,
    /// The Heroku Postgres add-on (id, name).
    pub addon_id: String,
    /// Its name.
    pub addon_name: String,
    /// The formation saved before scaling down (JSON list of {type, quantity, size}).
    pub formation: serde_json::Value,
    /// Whether maintenance was on before the cutover.
    pub maintenance_before: bool,
    /// Whether the "previous database" attachment existed before the cutover.
    pub previous_existed: bool,
    /// `completed`, `rolled-back`, or None while unfinished.
    pub outcome: Option<String>,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// Steps done: (step, detail, seconds since the epoch), in order.
    pub steps: Vec<(String, Option<serde_json::Value>, f64)>,
}

/// Creates the cutover tables (idempotent).
pub async fn ensure_cutover_tables(client: &Client) -> Result<()> {
    client
        .batch_execute(CUTOVER_DDL)
        .await
        .map_err(|e| query_error(e, "creating the cutover records on the target"))
}

/// DDL of `migrate`'s phase records. Idempotent; independent of [`STATE_DDL`] (the phases
/// start before replicate creates the rest). Holds no secrets.
pub const MIGRATE_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS heroku2rds;
CREATE TABLE IF NOT EXISTS heroku2rds.migrate_phases (
    phase       text PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    detail      jsonb NOT NULL DEFAULT '{}'
);
"#;

/// One recorded phase of `migrate`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseRecord {
    /// Phase name.
    pub phase: String,
    /// Seconds since the epoch.
    pub started_at: f64,
    /// Seconds since the epoch, once finished.
    pub finished_at: Option<f64>,
    /// What the phase recorded (no secrets).
    pub detail: serde_json::Value,
}

/// Creates the phase records when missing.
pub async fn ensure_migrate_phases(client: &Client) -> Result<()> {
    client
        .batch_execute(MIGRATE_DDL)
        .await
        .map_err(|e| query_error(e, "creating the migrate records on the target"))
}

/// Every recorded phase, in the order they started.
pub async fn migrate_phases(client: &Client) -> Result<Vec<PhaseRecord>> {
    let rows = client
        .query(
            "SELECT phase, extract(epoch FROM started_at)::float8,
                    extract(epoch FROM finished_at)::float8, detail
               FROM heroku2rds.migrate_phases ORDER BY started_at, phase",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the migrate records"))?;
    Ok(rows
        .iter()
        .map(|r| PhaseRecord {
            phase: r.get(0),
            started_at: r.get(1),
            finished_at: r.get(2),
            detail: r.get(3),
        })
        .collect())
}

/// Records that `phase` started at `started_at` (seconds since the epoch; now when None) unless
/// it was recorded before, and merges `detail` into its detail.
pub async fn start_migrate_phase(
    client: &Client,
    phase: &str,
    started_at: Option<f64>,
    detail: &serde_json::Value,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO heroku2rds.migrate_phases (phase, started_at, detail)
             VALUES ($1, coalesce(to_timestamp($2), clock_timestamp()), $3)
             ON CONFLICT (phase) DO UPDATE SET detail = migrate_phases.detail || excluded.detail",
            &[&phase, &started_at, detail],
        )
        .await
        .map_err(|e| query_error(e, "recording a migrate phase"))?;
    Ok(())
}

/// Records that `phase` finished (the first finish counts), merging `detail`.
pub async fn finish_migrate_phase(
    client: &Client,
    phase: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO heroku2rds.migrate_phases (phase, finished_at, detail)
             VALUES ($1, clock_timestamp(), $2)
             ON CONFLICT (phase) DO UPDATE
                SET finished_at = coalesce(migrate_phases.finished_at, clock_timestamp()),
                    detail = migrate_phases.detail || excluded.detail",
            &[&phase, detail],
        )
        .await
        .map_err(|e| query_error(e, "recording a migrate phase"))?;
    Ok(())
}

/// The newest cutover attempt, if any.
pub async fn last_cutover(client: &Client) -> Result<Option<CutoverRecord>> {
    let row = client
        .query_opt(
            "SELECT id, app, addon_id, addon_name, formation, maintenance_before, previous_existed, outcome, reason
               FROM heroku2rds.cutovers ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the cutover records"))?;
    let Some(r) = row else { return Ok(None) };
    let id: i32 = r.get(0);
    let steps = client
        .query(
            "SELECT step, detail, extract(epoch FROM at)::float8 FROM heroku2rds.cutover_steps
              WHERE cutover_id = $1 ORDER BY at, step",
            &[&id],
        )
        .await
        .map_err(|e| query_error(e, "reading the cutover steps"))?
        .iter()
        .map(|s| (s.get(0), s.get(1), s.get(2)))
        .collect();
    Ok(Some(CutoverRecord {
        id,
        app: r.get(1),
        addon_id: r.get(2),
        addon_name: r.get(3),
        formation: r.get(4),
        maintenance_before: r.get(5),
        previous_existed: r.get(6),
        outcome: r.get(7),
        reason: r.get(8),
        steps,
    }))
}

/// Records a new attempt; returns its id.
pub async fn start_cutover(
    client: &Client,
    app: &str,
    addon_id: &str,
    addon_name: &str,
    formation: &serde_json::Value,
    maintenance_before: bool,
    previous_existed: bool,
) -> Result<i32> {
    Ok(client
        .query_one(
            "INSERT INTO heroku2rds.cutovers (app, addon_id, addon_name, formation, maintenance_before, previous_existed)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[&app, &addon_id, &addon_name, formation, &maintenance_before, &previous_existed],
        )
        .await
        .map_err(|e| query_error(e, "recording the cutover"))?
        .get(0))
}

/// Records a step as done (idempotent: the first record wins); returns its time, seconds since
/// the epoch.
pub async fn record_cutover_step(
    client: &Client,
    id: i32,
    step: &str,
    detail: Option<&serde_json::Value>,
) -> Result<f64> {
    let row = client
        .query_one(
            "WITH ins AS (INSERT INTO heroku2rds.cutover_steps (cutover_id, step, detail) VALUES ($1, $2, $3)
                          ON CONFLICT DO NOTHING RETURNING at)
             SELECT extract(epoch FROM coalesce((SELECT at FROM ins),
                    (SELECT at FROM heroku2rds.cutover_steps WHERE cutover_id = $1 AND step = $2)))::float8",
            &[&id, &step, &detail],
        )
        .await
        .map_err(|e| query_error(e, &format!("recording cutover step {step}")))?;
    Ok(row.get(0))
}

/// Sets a note of attempt `id` (a record beside its steps that later runs may replace).
pub async fn set_cutover_note(
    client: &Client,
    id: i32,
    name: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO heroku2rds.cutover_steps (cutover_id, step, detail) VALUES ($1, $2, $3)
             ON CONFLICT (cutover_id, step) DO UPDATE SET detail = excluded.detail, at = clock_timestamp()",
            &[&id, &name, detail],
        )
        .await
        .map_err(|e| query_error(e, &format!("recording the cutover's {name}")))?;
    Ok(())
}

/// A note of attempt `id`.
pub async fn cutover_note(
    client: &Client,
    id: i32,
    name: &str,
) -> Result<Option<serde_json::Value>> {
    Ok(client
        .query_opt(
            "SELECT detail FROM heroku2rds.cutover_steps WHERE cutover_id = $1 AND step = $2",
            &[&id, &name],
        )
        .await
        .map_err(|e| query_error(e, &format!("reading the cutover's {name}")))?
        .and_then(|r| r.get(0)))
}

/// Ends an attempt.
pub async fn finish_cutover(
    client: &Client,
    id: i32,
    outcome: &str,
    reason: Option<&str>,
) -> Result<()> {
    client
        .execute(
            "UPDATE heroku2rds.cutovers SET outcome = $2, reason = $3, finished_at = clock_timestamp() WHERE id = $1",
            &[&id, &outcome, &reason],
        )
        .await
        .map_err(|e| query_error(e, "recording the end of the cutover"))?;
    Ok(())
}

/// Holds the target's single-runner lock for as long as it lives: a session advisory lock on a
/// dedicated connection whose `application_name` names the holder, so a second runner can say
/// which process holds it. Creates nothing on the target.
pub struct RunnerLock {
    _client: Client,
    key: i64,
}

/// Locks held by live [`RunnerLock`]s of this process (key, count): when one is held, a holder
/// with this process's pid is a live task of ours (migrate's in-process follower), not a
/// session left over from a lost connection.
static HELD_HERE: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

fn held_here(key: i64) -> bool {
    HELD_HERE.lock().map(|h| h.contains(&key)).unwrap_or(false)
}

impl Drop for RunnerLock {
    fn drop(&mut self) {
        if let Ok(mut h) = HELD_HERE.lock() {
            if let Some(i) = h.iter().position(|k| *k == self.key) {
                h.swap_remove(i);
            }
        }
    }
}

const RUNNER_LOCK_KEY: i64 = 0x6865_726f_6b75; // "heroku"
const CUTOVER_LOCK_KEY: i64 = 0x6375_746f_7672; // "cutovr"

impl RunnerLock {
    /// Takes the lock or fails naming the process that holds it.
    pub async fn acquire(client: Client, what: &str) -> Result<Self> {
        Self::acquire_key(client, what, RUNNER_LOCK_KEY).await
    }

    /// Takes the cutover's own lock (one cutover at a time per target); it does not exclude
    /// `replicate`.
    pub async fn acquire_cutover(client: Client) -> Result<Self> {
        Self::acquire_key(client, "cutover", CUTOVER_LOCK_KEY).await
    }

    /// Takes the runner lock if it is free; None when another process (a following
    /// `replicate`) holds it.
    pub async fn try_acquire(client: Client, what: &str) -> Result<Option<Self>> {
        match Self::acquire_key(client, what, RUNNER_LOCK_KEY).await {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == crate::error::Kind::Usage => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn acquire_key(client: Client, what: &str, key: i64) -> Result<Self> {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let me = format!("heroku2rds {what} on {host} pid {}", std::process::id());
        client
            .execute("SELECT set_config('application_name', $1, false)", &[&me])
            .await
            .map_err(|e| query_error(e, "naming the runner session"))?;
        // Our own earlier session (dropped after a lost connection) may hold the lock until the
        // server notices it is gone: wait for that one, never for another process.
        let own = format!("pid {}", std::process::id());
        for attempt in 0.. {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(|e| query_error(e, "taking the runner lock"))?
                .get(0);
            if got {
                break;
            }
            let holder = holder(&client, key).await.ok().flatten();
            if attempt < 50
                && !held_here(key)
                && holder.as_deref().is_some_and(|h| h.ends_with(&own))
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
            return Err(Error::usage(format!(
                "another heroku2rds process is already running against this target: {}",
                holder.unwrap_or_else(|| "a process not visible to this role".into())
            ))
            .with_fix(
                "wait for it to finish or stop it (Ctrl-C / SIGTERM) before starting another",
            ));
        }
        if let Ok(mut h) = HELD_HERE.lock() {
            h.push(key);
        }
        Ok(RunnerLock {
            _client: client,
            key,
        })
    }
}

/// True when a runner currently holds the target's lock (for `status`).
pub async fn runner(client: &Client) -> Result<Option<String>> {
    holder(client, RUNNER_LOCK_KEY).await
}

async fn holder(client: &Client, key: i64) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 LIMIT 1",
            &[&key],
        )
        .await
        .map_err(|e| query_error(e, "looking for a running replicate"))?;
    Ok(row.map(|r| r.get(0)))
}

/// DDL of the worker's source record: a newer source URL handed to the worker through the
/// target, sealed with a key only the worker's job holds (see `aws::job`). Idempotent.
pub const WORKER_SOURCE_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS heroku2rds;
CREATE TABLE IF NOT EXISTS heroku2rds.worker_source (
    id           int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    key_id       text NOT NULL,
    generation   int NOT NULL,
    sealed       bytea NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    used_key_id  text,
    used_generation int,
    used_at      timestamptz
);
"#;

/// The sealed source record, as stored (nothing here is readable without the job's key).
#[derive(Debug, Clone)]
pub struct WorkerSource {
    /// Which job's key sealed it.
    pub key_id: String,
    /// 1 for the first hand-over, one more on each.
    pub generation: i32,
    pub sealed: Vec<u8>,
}

/// Stores a newer sealed source URL for the worker whose job key is `key_id`, and records
/// `identity` (host:port/db, no credentials) as the migration's source when the migration
/// exists: a Heroku database that moved host is still the database the copy came from (its
/// capture triggers are checked on the next run). One transaction. Returns the generation.
pub async fn put_worker_source(
    client: &mut Client,
    key_id: &str,
    sealed: &[u8],
    identity: &str,
) -> Result<i32> {
    let fail = |e| query_error(e, "handing the new source URL to the worker");
    client
        .batch_execute(WORKER_SOURCE_DDL)
        .await
        .map_err(fail)?;
    let tx = client.transaction().await.map_err(fail)?;
    let generation: i32 = tx
        .query_one(
            "INSERT INTO heroku2rds.worker_source AS w (key_id, generation, sealed) VALUES ($1, 1, $2)
             ON CONFLICT (id) DO UPDATE SET key_id = EXCLUDED.key_id, sealed = EXCLUDED.sealed,
                    generation = w.generation + 1, updated_at = clock_timestamp()
             RETURNING generation",
            &[&key_id, &sealed],
        )
        .await
        .map_err(fail)?
        .get(0);
    let has_migration: bool = tx
        .query_one(
            "SELECT to_regclass('heroku2rds.migration') IS NOT NULL",
            &[],
        )
        .await
        .map_err(fail)?
        .get(0);
    if has_migration {
        tx.execute(
            "UPDATE heroku2rds.migration SET source = $1 WHERE source IS DISTINCT FROM $1",
            &[&identity],
        )
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(generation)
}

/// The sealed source record, when one was stored.
pub async fn worker_source(client: &Client) -> Result<Option<WorkerSource>> {
    let row = client
        .query_opt(
            "SELECT key_id, generation, sealed FROM heroku2rds.worker_source
              WHERE to_regclass('heroku2rds.worker_source') IS NOT NULL",
            &[],
        )
        .await;
    let row = match row {
        Ok(r) => r,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
        Err(e) => return Err(query_error(e, "reading the worker's source record")),
    };
    Ok(row.map(|r| WorkerSource {
        key_id: r.get(0),
        generation: r.get(1),
        sealed: r.get(2),
    }))
}

/// Records which source the worker runs on: its job's key and the generation it took (0: the
/// job's own URL). `status` compares it with the newest record.
pub async fn record_worker_source_used(
    client: &Client,
    key_id: &str,
    generation: i32,
) -> Result<()> {
    client
        .batch_execute(WORKER_SOURCE_DDL)
        .await
        .map_err(|e| query_error(e, "recording the worker's source"))?;
    client
        .execute(
            "UPDATE heroku2rds.worker_source SET used_key_id = $1, used_generation = $2, used_at = clock_timestamp()",
            &[&key_id, &generation],
        )
        .await
        .map_err(|e| query_error(e, "recording the worker's source"))?;
    Ok(())
}

/// True when a newer source URL was handed to the worker and the worker has not taken it yet.
pub async fn worker_source_outdated(client: &Client) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT (used_key_id IS NULL OR used_key_id = key_id) AND coalesce(used_generation, 0) < generation
               FROM heroku2rds.worker_source",
            &[],
        )
        .await;
    match row {
        Ok(r) => Ok(r.is_some_and(|r| r.get(0))),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(false),
        Err(e) => Err(query_error(e, "reading the worker's source record")),
    }
}

/// DDL of the worker's report: what the EC2 worker last said about itself, for `status` and
/// `migrate` on the laptop (which cannot read its journal). Idempotent.
pub const WORKER_REPORT_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS heroku2rds;
CREATE TABLE IF NOT EXISTS heroku2rds.worker_report (
    id     int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    state  text NOT NULL,
    detail text NOT NULL,
    since  timestamptz NOT NULL DEFAULT clock_timestamp(),
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
"#;

/// What the worker last reported: its state, the detail (never a URL or password), seconds
/// since it first reported this state, seconds since it last did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerReport {
    pub state: String,
    pub detail: String,
    pub since_s: f64,
    pub age_s: f64,
}

/// Records the worker's state (`running`, `source-unreachable`); `since` moves only when the
/// state changes.
pub async fn record_worker_report(client: &Client, state: &str, detail: &str) -> Result<()> {
    let fail = |e| query_error(e, "recording the worker's report");
    client
        .batch_execute(WORKER_REPORT_DDL)
        .await
        .map_err(fail)?;
    client
        .execute(
            "INSERT INTO heroku2rds.worker_report AS r (state, detail) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET detail = EXCLUDED.detail, at = clock_timestamp(),
                    since = CASE WHEN r.state = EXCLUDED.state THEN r.since ELSE clock_timestamp() END,
                    state = EXCLUDED.state",
            &[&state, &detail],
        )
        .await
        .map_err(fail)?;
    Ok(())
}

/// The worker's last report, when there is one.
pub async fn worker_report(client: &Client) -> Result<Option<WorkerReport>> {
    let row = client
        .query_opt(
            "SELECT state, detail, extract(epoch FROM clock_timestamp() - since)::float8,
                    extract(epoch FROM clock_timestamp() - at)::float8
               FROM heroku2rds.worker_report",
            &[],
        )
        .await;
    match row {
        Ok(r) => Ok(r.map(|r| WorkerReport {
            state: r.get(0),
            detail: r.get(1),
            since_s: r.get(2),
            age_s: r.get(3),
        })),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(query_error(e, "reading the worker's report")),
    }
}
