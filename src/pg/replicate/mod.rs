//! `replicate`: the engine's order of operations (DESIGN.md), each step recorded in the target's
//! state so that a re-run resumes where the last one stopped:
//!
//! 1. preflight (read-only);
//! 2. schema dump, change capture installed on the source, then schema pre-data restored, tables
//!    and chunks planned and the state created, all in ONE target transaction;
//! 3. chunks copied in parallel;
//! 4. post-data items (indexes, constraints, triggers) built in parallel waves, each recorded in
//!    its own transaction;
//! 5. ANALYZE, sequences, materialized views; phase `copied`;
//! 6. unless `--until copied`: apply the change log (follow).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::apply;
use super::capture::{self, InstallOptions};
use super::catalog::{self, Table};
use super::conn::{query_error, ConnSpec};
use super::copy::{self, Chunk, CopyTotals, Range, SplitInput};
use super::pool::{self, join_all};
use super::preflight::{self, KeylessMode};
use super::schema::{self, PostDataItem};
use super::sequences;
use crate::cancel::Cancel;
use crate::error::{Cause, Error, Kind, Result};
use crate::retry::Backoff;

mod post_data;

use crate::pg::store::{self, Phase, RunnerLock, STATE_DDL};
pub use post_data::validate_foreign_keys;
use post_data::{early_indexes, post_data, run_statements};

/// `application_name` of replicate's sessions on the source (how `clean` recognizes them).
pub const SOURCE_APPLICATION_NAME: &str = "heroku2rds replicate";

/// When `replicate` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Once every table is copied and indexed.
    Copied,
    /// Once the change log holds nothing committed (stop writes first for an exact copy).
    CaughtUp,
    /// Follow changes until interrupted (SIGINT/SIGTERM stop cleanly between batches).
    Forever,
}

/// Options of a replicate run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parallel workers; 0 picks from cores and free connection slots.
    pub jobs: usize,
    /// What to do with keyless tables.
    pub keyless: KeylessMode,
    /// Target chunk size in bytes.
    pub chunk_bytes: i64,
    /// When to return.
    pub until: Until,
    /// Lock timeout of each attempt to install a capture trigger.
    pub lock_timeout: Duration,
    /// Longest wait for the lock of one table before giving up.
    pub capture_max_wait: Duration,
    /// Change-log rows per apply batch.
    pub batch: i64,
    /// Background verification while following: bytes of table data read per second from each
    /// server (0: off).
    pub verify_rate: u64,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// True when the target was already complete and nothing was done.
    pub already_done: bool,
    /// Copy totals of this run.
    pub copied: CopyTotals,
    /// Workers used.
    pub jobs: usize,
    /// Apply totals of this run.
    pub applied: apply::BatchResult,
    /// Whether following was stopped by a signal.
    pub interrupted: bool,
}

/// Runs replication until `opts.until`. Every step is idempotent and recorded, so after a lost
/// connection or a server restart the whole run is simply resumed (with backoff, until five
/// minutes pass without progress: see [`Reconnects`]); other errors end it. A server that cannot be reached at the start is
/// reported at once: a wrong host or port is bad input, not an outage to wait out.
pub async fn run(
    source: &ConnSpec,
    target: &ConnSpec,
    opts: &Options,
    cancel: Cancel,
) -> Result<Outcome> {
    source.connect().await?;
    target.connect().await?;
    let mut reconnects = Reconnects::default();
    // Apply totals survive reconnects, for the summary.
    let mut applied = apply::BatchResult::default();
    loop {
        let mut mark = None;
        match run_once(
            source,
            target,
            opts,
            cancel.clone(),
            &mut applied,
            &mut mark,
        )
        .await
        {
            Err(e) if e.is_transient() && !cancel.is_cancelled() => {
                let Some(delay) = reconnects.after_failure(mark, Instant::now()) else {
                    return Err(e.context(format!(
                        "gave up after {} minutes of reconnecting without progress",
                        Reconnects::BUDGET.as_secs() / 60
                    )));
                };
                tracing::warn!(
                    "{e:#}; reconnecting in {:.1}s (completed work is kept)",
                    delay.as_secs_f64()
                );
                // A signal ends the wait; the next attempt then stops at its first check.
                let _ = cancel.sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// When to try again after a lost connection, and when to give up: exponential backoff from
/// 0.5 s to 10 s, for up to five minutes without progress. Progress is read from the target's
/// records (chunks copied, items built, changes applied, follow figures) when an attempt starts:
/// if they moved since the previous attempt started, that attempt got work done, so the outage
/// is over and the backoff starts again from its first delay. Attempts that cannot connect, or
/// that fail before doing anything (a server that keeps dying), back off and give up.
#[derive(Debug)]
struct Reconnects {
    outage_since: Option<Instant>,
    backoff: Backoff,
    last_mark: Option<String>,
}

impl Default for Reconnects {
    fn default() -> Self {
        Reconnects {
            outage_since: None,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            last_mark: None,
        }
    }
}

impl Reconnects {
    const BUDGET: Duration = Duration::from_secs(300);

    /// After a transient failure at `now` of an attempt that read the progress `mark` (None when
    /// it failed before): the delay before the next attempt, or None to give up.
    fn after_failure(&mut self, mark: Option<String>, now: Instant) -> Option<Duration> {
        if let Some(m) = mark {
            if self.last_mark.as_ref().is_some_and(|last| *last != m) {
                self.outage_since = None;
                self.backoff.reset();
            }
            self.last_mark = Some(m);
        }
        let since = *self.outage_since.get_or_insert(now);
        if now.duration_since(since) > Self::BUDGET {
            return None;
        }
        Some(self.backoff.next_delay())
    }
}

/// The target's record of work done, as one comparable string ("none" before the migration
/// exists). Every part only grows, so a different mark means progress.
async fn progress_mark(tgt: &Client) -> Result<String> {
    let exists: bool = tgt
        .query_one(
            "SELECT to_regclass('heroku2rds.migration') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the recorded progress"))?
        .get(0);
    if !exists {
        return Ok("none".into());
    }
    tgt.query_one(
        "SELECT concat_ws('/', (SELECT phase FROM heroku2rds.migration),
                (SELECT count(done_at) FROM heroku2rds.chunks), (SELECT count(*) FROM heroku2rds.schema_items),
                (SELECT applied_changes FROM heroku2rds.follow), (SELECT updated_at FROM heroku2rds.follow))",
        &[],
    )
    .await
    .map_err(|e| query_error(e, "reading the recorded progress"))
    .map(|r| r.get(0))
}

async fn run_once(
    source: &ConnSpec,
    target: &ConnSpec,
    opts: &Options,
    cancel: Cancel,
    applied: &mut apply::BatchResult,
    mark: &mut Option<String>,
) -> Result<Outcome> {
    let src = source.connect().await?;
    let tgt = target.connect().await?;
    let _lock = RunnerLock::acquire(target.connect().await?, "replicate").await?;
    *mark = Some(progress_mark(&tgt).await?);
    store::upgrade(&tgt).await?;
    // After the switch the target is the app's database: nothing may come from the old one.
    if let Some(at) = store::switched_at(&tgt).await? {
        return Err(store::switched_error(Some(at)));
    }
    let existing = store::load(&tgt).await?;
    let jobs = pick_jobs(&src, opts.jobs).await?;
    let migration = match existing {
        Some(m) => {
            if m.source != source_identity(source) {
                return Err(Error::usage(format!(
                    "the target already holds a migration from {}, not from {}",
                    m.source,
                    source_identity(source)
                ))
                .with_fix("pass the same --source as the first run, or point --target at an empty database"));
            }
            ensure_capture_intact(&src, &tgt).await?;
            if m.phase == Phase::Copied && opts.until == Until::Copied {
                tracing::info!(
                    "the target is already complete: every table was copied; nothing to do"
                );
                return Ok(Outcome {
                    already_done: true,
                    jobs,
                    ..Default::default()
                });
            }
            tracing::info!(
                "resuming the migration recorded on the target (phase {})",
                m.phase.as_str()
            );
            m
        }
        None => {
            if catalog::has_user_relations(&tgt).await? {
                return Err(Error::usage(format!("the target database {target} is not empty and holds no heroku2rds migration"))
                    .with_fix("point --target at a new, empty database (heroku2rds creates the schema itself)"));
            }
            let report = preflight::run(source, Some(target), opts.keyless).await?;
            if report.blocked() {
                return Err(Error::new(Kind::Blocked, format!("preflight found blocking problems:\n{}", preflight::render(&report)))
                    .with_fix("fix the BLOCKING items above (or run `heroku2rds preflight` for the full report), then re-run"));
            }
            for f in report
                .findings
                .iter()
                .filter(|f| f.severity == preflight::Severity::Warning)
            {
                tracing::warn!("{}", f.message);
            }
            start(source, target, &src, opts, &report.facts.tables).await?;
            store::load(&tgt)
                .await?
                .ok_or_else(|| Error::other("the migration state vanished after it was created"))?
        }
    };
    let mut phase = migration.phase;
    let mut totals = CopyTotals::default();
    if phase == Phase::Copying {
        let tables = Arc::new(load_tables(&tgt).await?);
        let chunks = pending_chunks(&tgt).await?;
        let (done, total) = chunk_counts(&tgt).await?;
        tracing::info!(
            "copying {} chunk(s) with {jobs} worker(s) ({done} of {total} already done)",
            chunks.len()
        );
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        // Tables already complete (a resumed run) can have their indexes built right away.
        let pending: std::collections::HashSet<i32> = chunks.iter().map(|c| c.table_id).collect();
        for id in tables.keys().filter(|id| !pending.contains(id)) {
            let _ = done_tx.send(*id);
        }
        let copying = copy::copy_all(
            source,
            target,
            tables.clone(),
            chunks,
            jobs,
            cancel.clone(),
            done_tx,
        );
        let indexing = early_indexes(
            target,
            &tgt,
            &migration.post_data,
            tables,
            done_rx,
            jobs,
            cancel.clone(),
        );
        let (copied, indexed) = tokio::join!(copying, indexing);
        totals = copied?;
        indexed?;
        phase = Phase::PostData;
        store::set_phase(&tgt, phase).await?;
    }
    if phase == Phase::PostData {
        post_data(
            source,
            target,
            &tgt,
            &migration.post_data,
            opts,
            jobs,
            cancel.clone(),
        )
        .await?;
        phase = Phase::Finishing;
        store::set_phase(&tgt, phase).await?;
    }
    if phase == Phase::Finishing {
        let tables = load_tables(&tgt).await?;
        let statements = tables
            .values()
            .map(|t| format!("ANALYZE {}", t.qualified()))
            .collect();
        tracing::info!("analyzing {} table(s)", tables.len());
        run_statements(target, jobs, statements, cancel.clone()).await?;
        let n = sequences::sync(&src, &tgt).await?;
        tracing::info!("set {n} sequence(s) to the source's values");
        validate_foreign_keys(&tgt).await?;
        let m = sequences::refresh_matviews(&tgt).await?;
        tracing::info!("refreshed {m} materialized view(s)");
        store::set_phase(&tgt, Phase::Copied).await?;
        tracing::info!("copy complete: the target holds every replicated table as of the copy");
    }
    let mut outcome = Outcome {
        already_done: false,
        copied: totals,
        jobs,
        ..Default::default()
    };
    if opts.until != Until::Copied {
        outcome.interrupted = follow_session(source, target, opts, &cancel, applied).await?;
        outcome.applied = *applied;
    }
    Ok(outcome)
}

/// Refuses to resume when the capture triggers are gone from the source: changes made while
/// they were missing are lost, so the copy can no longer be trusted.
async fn ensure_capture_intact(src: &Client, tgt: &Client) -> Result<()> {
    let oids: Vec<u32> = replicated_tables(tgt).await?.into_keys().collect();
    let row = src
        .query_one(
            "SELECT to_regclass('heroku2rds.changes') IS NOT NULL,
                    (SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname = $2 AND tgrelid = ANY($1))",
            &[&oids, &capture::ROW_TRIGGER],
        )
        .await
        .map_err(|e| query_error(e, "checking change capture on the source"))?;
    let (log, triggers): (bool, i64) = (row.get(0), row.get(1));
    if !log || triggers != oids.len() as i64 {
        return Err(Error::other(format!(
            "change capture is missing on the source ({triggers} of {} tables captured, change log {}): \
             changes made since then were not recorded",
            oids.len(),
            if log { "present" } else { "missing" }
        ))
        .with_fix("start over: `heroku2rds clean --source ... --target ...`, empty the target database, then run replicate again"));
    }
    Ok(())
}

/// Tables whose changes are captured and applied, by source oid.
async fn replicated_tables(tgt: &Client) -> Result<HashMap<u32, Table>> {
    let modes = store::table_modes(tgt).await?;
    Ok(load_tables(tgt)
        .await?
        .into_iter()
        .filter(|(id, t)| t.has_key() && modes.get(id).is_some_and(|m| m == "copy"))
        .map(|(_, t)| (t.oid, t))
        .collect())
}

/// One connected stretch of following. Returns Ok(true) when interrupted, Ok(false) when
/// caught up (`--until caught-up`).
async fn follow_session(
    source: &ConnSpec,
    target: &ConnSpec,
    opts: &Options,
    cancel: &Cancel,
    totals: &mut apply::BatchResult,
) -> Result<bool> {
    let src = source.connect().await?;
    let mut tgt = target.connect().await?;
    let tables = replicated_tables(&tgt).await?;
    tracing::info!("following changes on {} table(s)", tables.len());
    // Verification runs beside the apply on its own connections and ends with this session.
    let verifier = (opts.verify_rate > 0 && opts.until == Until::Forever).then(|| {
        tracing::info!(
            "verifying in the background at up to {:.1} MB/s of table data per server (--verify-rate-mb)",
            opts.verify_rate as f64 / 1e6
        );
        AbortOnDrop(tokio::spawn(crate::pg::verify::ranges::background(
            source.clone(),
            target.clone(),
            opts.verify_rate,
            cancel.clone(),
        )))
    });
    let _verifier = verifier;
    let mut fks_checked = Instant::now() - Duration::from_secs(3600);
    let mut last_stats = Instant::now() - Duration::from_secs(60);
    let mut last_sequences = Instant::now();
    let mut window = (Instant::now(), 0u64);
    loop {
        if cancel.is_cancelled() {
            record_follow(&src, &tgt, false, Some("interrupted")).await?;
            tracing::info!("stopped following: interrupted (re-run to continue)");
            return Ok(true);
        }
        let changes = apply::schema_changes(&src, &tables).await?;
        if !changes.is_empty() {
            let list: Vec<String> = changes
                .iter()
                .map(|c| format!("{}: {}", c.table, c.what))
                .collect();
            let reason = format!("schema change on the source: {}", list.join("; "));
            record_follow(&src, &tgt, false, Some(&reason)).await?;
            return Err(Error::new(Kind::Blocked, format!("{reason}; applying stopped so that nothing diverges"))
                .with_fix("apply the same DDL to the target, then start the migration of that table over (this version cannot yet re-copy a single table)"));
        }
        let r = match apply::apply_batch(&src, &mut tgt, &tables, opts.batch).await {
            Err(e) if *e.cause() == Cause::Switched => {
                return Err(stop_switched(&tgt, e).await);
            }
            other => other?,
        };
        totals.changes += r.changes;
        totals.keys += r.keys;
        totals.rows += r.rows;
        totals.truncates += r.truncates;
        window.1 += r.changes;
        let caught_up = r.changes == 0;
        if caught_up || last_stats.elapsed() > Duration::from_secs(2) {
            if let Err(e) = record_follow(&src, &tgt, caught_up, None).await {
                if *e.cause() == Cause::Switched {
                    return Err(stop_switched(&tgt, e).await);
                }
                return Err(e);
            }
            let secs = window.0.elapsed().as_secs_f64().max(0.001);
            if window.1 > 0 {
                tracing::info!(
                    "applied {} change(s) in {:.1}s ({:.0}/s)",
                    window.1,
                    secs,
                    window.1 as f64 / secs
                );
            }
            window = (Instant::now(), 0);
            last_stats = Instant::now();
        }
        if last_sequences.elapsed() > Duration::from_secs(30) {
            sequences::sync(&src, &tgt).await?;
            last_sequences = Instant::now();
        }
        // Foreign keys left NOT VALID by the copy are validated once caught up, out of the
        // cutover's freeze (a minute apart at most while some still fail).
        if caught_up
            && fks_checked.elapsed() > Duration::from_secs(60)
            && opts.until == Until::Forever
        {
            fks_checked = Instant::now();
            validate_foreign_keys(&tgt).await?;
        }
        if caught_up {
            if opts.until == Until::CaughtUp {
                validate_foreign_keys(&tgt).await?;
                let n = sequences::sync(&src, &tgt).await?;
                tracing::info!(
                    "caught up: the change log holds nothing committed; {n} sequence(s) synced"
                );
                return Ok(false);
            }
            let _ = cancel.sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records why following stopped after the switch (for `status` and `migrate`) and returns the
/// error it stops with.
async fn stop_switched(tgt: &Client, e: Error) -> Error {
    tracing::warn!("{}", e.message());
    let _ = tgt
        .execute(
            "UPDATE heroku2rds.follow SET stopped_reason = 'switched', caught_up = false, updated_at = now()",
            &[],
        )
        .await;
    e
}

/// Writes backlog, lag and whether the target is caught up, for `status`. Fails with the
/// switch error once the app was switched to the target.
async fn record_follow(
    src: &Client,
    tgt: &Client,
    caught_up: bool,
    stopped: Option<&str>,
) -> Result<()> {
    let row = src
        .query_one(
            "SELECT count(*), extract(epoch FROM now() - min(at))::float8 FROM heroku2rds.changes",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "measuring the backlog"))?;
    let (backlog, oldest): (i64, Option<f64>) = (row.get(0), row.get(1));
    let n = tgt
        .execute(
            "UPDATE heroku2rds.follow SET backlog = $1, oldest_change_s = $2, caught_up = $3, stopped_reason = $4,
                    updated_at = now()
              WHERE switched_at IS NULL",
            &[&backlog, &oldest, &caught_up, &stopped],
        )
        .await
        .map_err(|e| query_error(e, "recording follow progress"))?;
    if n == 0 {
        return Err(store::switched_error(store::switched_at(tgt).await?));
    }
    Ok(())
}

/// The identity of the source recorded with the migration (no user, no password: credentials
/// rotate, the database does not).
pub fn source_identity(source: &ConnSpec) -> String {
    format!("{}:{}/{}", source.host(), source.port(), source.dbname())
}

async fn pick_jobs(src: &Client, requested: usize) -> Result<usize> {
    if requested > 0 {
        return Ok(requested);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let free: i64 = src
        .query_one(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                    - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "counting free connections"))?
        .get(0);
    // Leave half of the free slots to the application.
    Ok(cores.max(2).min(((free / 2) as usize).max(1)).min(16))
}

/// Creates the target schema, the state and the chunk plan in one transaction.
async fn start(
    source: &ConnSpec,
    target: &ConnSpec,
    src: &Client,
    opts: &Options,
    tables: &[Table],
) -> Result<()> {
    tracing::info!("dumping the source schema (pg_dump --schema-only)");
    let scripts = schema::dump(source).await?;
    // Capture goes in BEFORE any chunk is copied: every change from here on is logged.
    let install = InstallOptions {
        lock_timeout: opts.lock_timeout,
        max_wait: opts.capture_max_wait,
    };
    capture::install(src, tables, install).await?;
    let tid_range_scans = catalog::server_major(src).await? >= 14;
    let mut plans = Vec::with_capacity(tables.len());
    for t in tables {
        let mode = if t.has_key() {
            "copy"
        } else {
            match opts.keyless {
                KeylessMode::Error => {
                    return Err(Error::new(
                        Kind::Blocked,
                        format!("table {} has no usable key", t.display_name()),
                    ))
                }
                KeylessMode::Recopy => "recopy",
                KeylessMode::Exclude => "exclude",
            }
        };
        let ranges = if mode == "exclude" {
            Vec::new()
        } else if mode == "recopy" {
            vec![Range::Whole]
        } else {
            let int_key_range = if t.integer_key {
                let k = super::conn::quote_ident(&t.key[0]);
                let row = src
                    .query_one(
                        &format!(
                            "SELECT min({k})::bigint, max({k})::bigint FROM ONLY {}",
                            t.qualified()
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| {
                        query_error(e, &format!("reading the key range of {}", t.display_name()))
                    })?;
                row.get::<_, Option<i64>>(0)
                    .zip(row.get::<_, Option<i64>>(1))
            } else {
                None
            };
            copy::split(
                SplitInput {
                    bytes: t.bytes,
                    pages: t.pages,
                    int_key_range,
                    tid_range_scans,
                },
                opts.chunk_bytes,
            )
        };
        plans.push((t, mode, ranges));
    }

    let mut tgt = target.connect().await?;
    let tx = tgt
        .transaction()
        .await
        .map_err(|e| query_error(e, "starting the schema transaction"))?;
    if catalog::has_user_relations(&tx).await? {
        return Err(Error::usage(format!(
            "the target database {target} is not empty"
        )));
    }
    tx.batch_execute(STATE_DDL)
        .await
        .map_err(|e| query_error(e, "creating the state schema on the target"))?;
    tx.batch_execute(crate::pg::verify::ranges::DDL)
        .await
        .map_err(|e| query_error(e, "creating the state schema on the target"))?;
    tracing::info!("restoring the schema (pre-data) on the target");
    tx.batch_execute(&scripts.pre_data).await.map_err(|e| {
        let fix = if e.code() == Some(&tokio_postgres::error::SqlState::OUT_OF_MEMORY) {
            // 53200: the shared lock table is full (the whole schema goes in one transaction).
            "the target ran out of lock table space for the schema's one transaction: raise max_locks_per_transaction on the target (`heroku2rds preflight --target ...` names the value) and restart it, then re-run: nothing was kept"
        } else {
            "the target refused part of the source schema (often an extension or a role it lacks); fix that on the target, then re-run: nothing was kept"
        };
        query_error(e, "restoring the source schema on the target").with_fix(fix)
    })?;
    tx.execute(
        "INSERT INTO heroku2rds.migration (source, phase, keyless, pre_data, post_data) VALUES ($1, 'copying', $2, $3, $4)",
        &[&source_identity(source), &format!("{:?}", opts.keyless).to_lowercase(), &scripts.pre_data, &scripts.post_data],
    )
    .await
    .map_err(|e| query_error(e, "recording the migration"))?;
    let mut chunk_count = 0;
    for (t, mode, ranges) in &plans {
        let def = serde_json::to_value(t)
            .map_err(|e| Error::other("serializing a table definition").with_source(e))?;
        let id: i32 = tx
            .query_one(
                "INSERT INTO heroku2rds.tables (schema_name, table_name, definition, mode, est_rows, est_bytes)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&t.schema, &t.name, &def, mode, &t.est_rows.max(0), &t.bytes],
            )
            .await
            .map_err(|e| query_error(e, "recording a table"))?
            .get(0);
        let per = t.bytes / (ranges.len().max(1) as i64);
        for (no, r) in ranges.iter().enumerate() {
            let (lo, hi) = r.bounds();
            tx.execute(
                "INSERT INTO heroku2rds.chunks (table_id, chunk_no, kind, lo, hi, est_bytes) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &(no as i32), &r.kind(), &lo, &hi, &per],
            )
            .await
            .map_err(|e| query_error(e, "recording a chunk"))?;
            chunk_count += 1;
        }
    }
    store::set_phase(&tx, Phase::Copying).await?;
    tx.commit()
        .await
        .map_err(|e| query_error(e, "committing the schema and the plan"))?;
    tracing::info!(
        "schema restored; {} table(s) planned in {chunk_count} chunk(s)",
        plans.len()
    );
    Ok(())
}

/// Table definitions recorded at start, by state id.
pub async fn load_tables(tgt: &Client) -> Result<HashMap<i32, Table>> {
    let rows = tgt
        .query("SELECT id, definition FROM heroku2rds.tables", &[])
        .await
        .map_err(|e| query_error(e, "reading recorded tables"))?;
    rows.iter()
        .map(|r| {
            let t: Table = serde_json::from_value(r.get(1)).map_err(|e| {
                Error::other("a recorded table definition is unreadable").with_source(e)
            })?;
            Ok((r.get(0), t))
        })
        .collect()
}

async fn pending_chunks(tgt: &Client) -> Result<Vec<Chunk>> {
    let rows = tgt
        .query("SELECT table_id, chunk_no, kind, lo, hi, est_bytes FROM heroku2rds.chunks WHERE done_at IS NULL", &[])
        .await
        .map_err(|e| query_error(e, "reading pending chunks"))?;
    rows.iter()
        .map(|r| {
            Ok(Chunk {
                table_id: r.get(0),
                chunk_no: r.get(1),
                range: Range::from_stored(r.get(2), r.get(3), r.get(4))?,
                est_bytes: r.get(5),
            })
        })
        .collect()
}

async fn chunk_counts(tgt: &Client) -> Result<(i64, i64)> {
    let r = tgt
        .query_one(
            "SELECT count(*) FILTER (WHERE done_at IS NOT NULL), count(*) FROM heroku2rds.chunks",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "counting chunks"))?;
    Ok((r.get(0), r.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(r: &mut Reconnects, marks: &[Option<&str>], start: Instant) -> Vec<Option<f64>> {
        let mut now = start;
        marks
            .iter()
            .map(|m| {
                let d = r.after_failure(m.map(String::from), now);
                now += d.unwrap_or_default() + Duration::from_secs(1);
                d.map(|d| d.as_secs_f64())
            })
            .collect()
    }

    #[test]
    fn reconnects_back_off_while_nothing_connects_and_give_up_after_five_minutes() {
        let mut r = Reconnects::default();
        let t0 = Instant::now();
        let got = delays(&mut r, &[None; 7], t0);
        assert_eq!(
            got,
            [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0].map(Some).to_vec()
        );
        assert!(r
            .after_failure(None, t0 + Duration::from_secs(299))
            .is_some());
        assert_eq!(r.after_failure(None, t0 + Duration::from_secs(301)), None);
    }

    #[test]
    fn reconnects_that_make_no_progress_also_give_up() {
        // Attempts connect (they read a mark) but the mark never moves: a server that dies on
        // every attempt.
        let mut r = Reconnects::default();
        let t0 = Instant::now();
        let got = delays(&mut r, &[Some("copying/3/0/0/")].repeat(5), t0);
        assert_eq!(got, [0.5, 1.0, 2.0, 4.0, 8.0].map(Some).to_vec());
        assert_eq!(
            r.after_failure(Some("copying/3/0/0/".into()), t0 + Duration::from_secs(400)),
            None
        );
    }

    #[test]
    fn progress_between_failures_ends_the_outage() {
        let mut r = Reconnects::default();
        let t0 = Instant::now();
        // Refused twice, then attempts that each get work done before failing.
        let got = delays(
            &mut r,
            &[
                None,
                None,
                Some("none"),
                Some("copying/1"),
                Some("copying/5"),
                None,
            ],
            t0,
        );
        assert_eq!(got, [0.5, 1.0, 2.0, 0.5, 0.5, 1.0].map(Some).to_vec());
        // An hour later, after a long healthy run, a new outage gets its own five minutes.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            r.after_failure(Some("copied/9/3/100/x".into()), later),
            Some(Duration::from_millis(500))
        );
        assert!(r
            .after_failure(None, later + Duration::from_secs(200))
            .is_some());
    }
}
