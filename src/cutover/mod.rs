//! `cutover`: the switch of a Heroku app from its Heroku Postgres database to the target, through
//! the Platform API (DESIGN.md, "Heroku"):
//!
//! 1. check: replication caught up, target healthy, token valid, formation known;
//! 2. save the formation, maintenance on, every process type scaled to 0, one-off dynos stopped,
//!    wait until no dyno runs (the write freeze begins);
//! 3. wait for the app's sessions on the source to end (terminate stragglers after a grace),
//!    drain the change log, copy keyless tables again, sync sequences, refresh materialized
//!    views, validate foreign keys, verify;
//! 4. **point of no return**: keep the Heroku database attached under another name, detach
//!    `DATABASE`, set `DATABASE_URL` to the target;
//! 5. wait for the new release to succeed, restore the formation (in this order: a dyno started
//!    while the release is pending runs the previous release, whose `DATABASE_URL` is the Heroku
//!    database), wait for every dyno to be up on the new release, maintenance off, report the
//!    downtime.
//!
//! Every step is recorded on the target (`heroku2rds.cutovers`, `heroku2rds.cutover_steps`), so
//! a re-run after a crash knows where the last one stopped. Before the point of no return any
//! failure, Ctrl-C, or a re-run after a crash ROLLS BACK: formation restored, maintenance off
//! again (if it was off), the extra attachment removed, `DATABASE_URL` never touched. After it,
//! the switch only goes FORWARD: Ctrl-C is ignored and a re-run continues to completion.
//!
//! The decisions (is it ready, what does a re-run do, what does a rollback change) are pure
//! functions with unit tests; the orchestration below only gathers facts and carries them out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::cancel::Cancel;
use crate::error::{Cause, Error, Kind, Result};
use crate::heroku::app::{App, Attachment, Database, Dyno, Process};
use crate::heroku::client::Client as Heroku;
use crate::pg::capture::InstallOptions;
use crate::pg::catalog::Table;
use crate::pg::conn::{query_error, ConnSpec, SslMode};
use crate::pg::fence::{self, Notice};
use crate::pg::progress::Sink;
use crate::pg::store::{self, CutoverRecord, Phase, RunnerLock};
use crate::pg::{apply, copy, replicate, sequences, verify};

pub mod attachments;
pub mod estimate;
mod freeze;
mod policy;
mod rollback;
mod switch;

use attachments::{Consent, Move};
use freeze::Freeze;
pub use policy::*;
use rollback::rollback;
use switch::forward;

/// The attachment name under which the Heroku database stays attached after the switch (its URL
/// stays available as `HEROKU2RDS_PREVIOUS_DATABASE_URL`).
pub const PREVIOUS_ATTACHMENT: &str = crate::heroku::app::PREVIOUS_DATABASE_ATTACHMENT;
/// Options of a cutover.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Heroku app.
    pub app: String,
    /// `--addon`: which Heroku Postgres add-on, when ambiguous.
    pub addon: Option<String>,
    /// The source (None: the app's `DATABASE_URL`).
    pub source: Option<ConnSpec>,
    /// The target, as this machine reaches it.
    pub target: ConnSpec,
    /// The URL set as `DATABASE_URL` (a secret: never logged).
    pub app_url: String,
    /// Plan only.
    pub dry_run: bool,
    /// How long the app's sessions get to end before they are terminated.
    pub session_grace: Duration,
    /// Largest replication lag accepted at the start.
    pub max_lag: Duration,
    /// Longest wait for dynos to stop or to come up.
    pub dyno_timeout: Duration,
    /// Longest wait for a live follower to drain the change log.
    pub drain_timeout: Duration,
    /// Longest wait for the release of the switch.
    pub release_timeout: Duration,
    /// Verification jobs.
    pub jobs: usize,
    /// What may be moved besides the app's `DATABASE` (other apps, the pooler, aliases).
    pub consent: Consent,
    /// The URL the pooler's variable gets (a secret; None: `app_url`).
    pub pooler_url: Option<String>,
}

/// One app the cutover freezes and switches, as it was before.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Frozen {
    /// The app.
    pub app: String,
    /// Its formation before the cutover.
    pub formation: Vec<Process>,
    /// Whether maintenance was on.
    pub maintenance_before: bool,
    /// Process types left running behind maintenance (`web` in a Private Space, where scaling
    /// it to 0 shows errors instead of the maintenance page); the fence stops their writes.
    #[serde(default)]
    pub keep_running: Vec<String>,
}

/// What an attempt recorded at its start: every app it freezes and every attachment it moves.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Scope {
    /// The apps, the migrated app first.
    pub apps: Vec<Frozen>,
    /// The attachments moved at the switch.
    pub moves: Vec<Move>,
}

impl Scope {
    /// The scope of a recorded attempt (records of older versions: the one app, its `DATABASE`).
    pub fn of(rec: &CutoverRecord) -> Result<Scope> {
        let checked = rec
            .steps
            .iter()
            .find(|s| s.0 == Step::Checked.as_str())
            .and_then(|s| s.1.clone());
        if let Some(scope) = checked
            .as_ref()
            .and_then(|d| d.get("scope"))
            .and_then(|v| serde_json::from_value::<Scope>(v.clone()).ok())
        {
            return Ok(scope);
        }
        let formation: Vec<Process> = serde_json::from_value(rec.formation.clone())
            .map_err(|e| Error::other("the saved formation is unreadable").with_source(e))?;
        Ok(Scope {
            apps: vec![Frozen {
                app: rec.app.clone(),
                formation,
                maintenance_before: rec.maintenance_before,
                keep_running: Vec::new(),
            }],
            moves: Vec::new(),
        })
    }

    /// The URL variable `m` gets at the switch.
    fn url_for<'a>(opts: &'a Options, m: &Move) -> &'a str {
        match (m.kind, &opts.pooler_url) {
            (attachments::Kind::Pooler, Some(u)) => u,
            _ => &opts.app_url,
        }
    }
}

/// One recorded step, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    /// Step name.
    pub step: String,
    /// Seconds since the epoch.
    pub at: f64,
}

/// What the cutover did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The app.
    pub app: String,
    /// `completed`, `already-completed`, `dry-run`.
    pub outcome: String,
    /// Steps with their times.
    pub steps: Vec<StepTime>,
    /// Maintenance on -> off, seconds.
    pub downtime_s: Option<f64>,
    /// No dyno running -> every dyno up on the new release, seconds.
    pub write_freeze_s: Option<f64>,
    /// The release that switched the database.
    pub release: Option<i64>,
    /// The database the app now uses (no password).
    pub database: String,
    /// For a dry run: the steps it would take.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
    /// For a dry run: the expected write freeze and downtime, and what they rest on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<estimate::Estimate>,
}

/// Renders the report for people.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    match r.outcome.as_str() {
        "dry-run" => {
            s.push_str(&format!(
                "dry run: app {} is ready for the cutover; these steps would run:\n",
                r.app
            ));
            for (i, p) in r.plan.iter().enumerate() {
                s.push_str(&format!("  {:>2}. {p}\n", i + 1));
            }
            return s;
        }
        "already-completed" => s.push_str(&format!(
            "the cutover of app {} already completed: it uses {}\n",
            r.app, r.database
        )),
        _ => s.push_str(&format!(
            "cutover complete: app {} now uses {} (release v{})\n",
            r.app,
            r.database,
            r.release.unwrap_or_default()
        )),
    }
    if let Some(d) = r.downtime_s {
        s.push_str(&format!("downtime (maintenance on -> off): {d:.1}s\n"));
    }
    if let Some(w) = r.write_freeze_s {
        s.push_str(&format!(
            "write freeze (dynos at zero -> dynos up): {w:.1}s\n"
        ));
    }
    s
}

/// Asks the user to confirm the plan; returns false to abort.
pub type Confirm<'a> = &'a mut (dyn FnMut(&[String]) -> Result<bool> + Send);

/// True for the error of a run that rolled back an interrupted attempt and switched nothing:
/// running again starts a fresh cutover.
pub fn rolled_back_interrupted(e: &Error) -> bool {
    *e.cause() == Cause::CutoverRolledBack
}

/// The error of a run that rolled back an interrupted attempt of `app` and switched nothing.
fn rolled_back_error(app: &str) -> Error {
    Error::other(format!(
        "rolled back the interrupted cutover of app {app}: maintenance, formation and DATABASE_URL are as before"
    ))
    .with_cause(Cause::CutoverRolledBack)
    .with_fix("run `heroku2rds cutover` again to switch")
}

/// Flags shared with the signal handler.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Set on Ctrl-C / SIGTERM.
    pub cancel: Cancel,
    /// Set by the cutover once past the point of no return (the handler then says the switch
    /// will complete).
    pub past_point_of_no_return: Arc<AtomicBool>,
}

/// Runs (or resumes, or rolls back) the cutover.
pub async fn run(
    heroku: &Heroku,
    opts: &Options,
    confirm: Confirm<'_>,
    signals: &Signals,
    sink: &dyn Sink,
) -> Result<Report> {
    let tgt = opts.target.connect().await?;
    if store::load(&tgt).await?.is_none() {
        return Err(Error::usage("the target holds no heroku2rds migration")
            .with_fix("run `heroku2rds replicate --source ... --target ...` first, with the same --target"));
    }
    // One cutover at a time; a replicate running beside it is fine (it is the live follower).
    let _lock = RunnerLock::acquire_cutover(opts.target.connect().await?).await?;
    let last = if store::has_cutover_records(&tgt).await? {
        store::last_cutover(&tgt).await?
    } else {
        None
    };
    let app = App::new(heroku, &opts.app);
    if let Some(rec) = &last {
        if rec.app != opts.app {
            return Err(Error::usage(format!(
                "the target's cutover records are for app {}, not {}",
                rec.app, opts.app
            )));
        }
        let steps: BTreeSet<Step> = rec.steps.iter().filter_map(|s| Step::parse(&s.0)).collect();
        match resume(rec.outcome.as_deref(), &steps) {
            Some(Resume::AlreadyCompleted) => {
                return Ok(report(opts, rec, "already-completed"));
            }
            Some(Resume::RollBack) => {
                if opts.dry_run {
                    return Err(Error::other(format!("cutover attempt {} of app {} stopped before the point of no return; a run without --dry-run rolls it back", rec.id, opts.app)));
                }
                tracing::warn!(
                    "the previous cutover stopped before the point of no return: rolling it back"
                );
                let why = "the previous run stopped before the point of no return (crash or kill)";
                rollback(heroku, &tgt, rec, opts, why, None).await?;
                return Err(rolled_back_error(&opts.app));
            }
            Some(Resume::Continue(step)) => {
                if opts.dry_run {
                    return Err(Error::other(format!("cutover attempt {} of app {} is past the point of no return; a run without --dry-run finishes it from step {}", rec.id, opts.app, step.as_str())));
                }
                signals
                    .past_point_of_no_return
                    .store(true, Ordering::SeqCst);
                tracing::warn!(
                    "the previous cutover passed the point of no return: continuing from step {}",
                    step.as_str()
                );
                return forward(heroku, &tgt, rec.clone(), opts, sink).await;
            }
            Some(Resume::Fresh) => {}
            None => {
                return Err(Error::other(format!(
                    "unknown cutover outcome {:?} on the target",
                    rec.outcome
                )))
            }
        }
    }

    // Fresh: gather the facts.
    let info = app.info().await?;
    let db = app.database(opts.addon.as_deref()).await?;
    let formation = app.formation().await?;
    let attachments = app.attachments().await?;
    let vars = app.config_vars().await?;
    let heroku_url = db
        .database_attachment
        .as_ref()
        .and_then(|a| vars.get(&format!("{}_URL", a.name)).cloned().flatten());
    let (source, source_mismatch) = resolve_source(opts, heroku_url.as_deref())?;
    let src = source.connect().await?;
    let mut facts = gather(&src, &tgt).await?;
    facts.database_attached = db.database_attachment.is_some();
    facts.source_mismatch = source_mismatch;
    facts.formation_known = true;
    let previous = attachments.iter().find(|a| a.name == PREVIOUS_ATTACHMENT);
    facts.previous_taken = previous.filter(|a| a.addon.id != db.addon.id).map(|a| {
        format!(
            "an attachment named {PREVIOUS_ATTACHMENT} already exists for add-on {}",
            a.addon.name
        )
    });
    // Every attachment of the add-on, on every app: each one left on Heroku is a writer.
    let everywhere = heroku.addon_attachments(&db.addon.id).await?;
    let (moves, mut blockers) = attachments::decide(&opts.app, &everywhere, &opts.consent);
    blockers.extend(readiness(&facts, opts.max_lag));
    let mut scope = Scope {
        apps: Vec::new(),
        moves,
    };
    let mut notes = Vec::new();
    for name in attachments::apps_of(&opts.app, &scope.moves) {
        let other = App::new(heroku, &name);
        let (info, formation) = if name == opts.app {
            (info.clone(), formation.clone())
        } else {
            (other.info().await?, other.formation().await?)
        };
        let keep_running = if info.in_private_space() {
            notes.push(format!("app {name} runs in a Private Space: its web dynos keep running behind maintenance (scaled to 0 they would show errors instead of the maintenance page); the write fence stops their writes and they restart on the new release"));
            vec!["web".to_string()]
        } else {
            Vec::new()
        };
        if formation.iter().any(|p| p.process_type == "release") {
            notes.push(format!("app {name} has a release phase: its release command runs on each release the cutover makes; the one after the switch runs against the target"));
        }
        for (addon, service, what) in crate::heroku::app::dyno_starters(&other.addons().await?) {
            notes.push(format!("app {name}: add-on {addon} ({service}) {what}: during the cutover what it starts is stopped again, and its writes fail at the write fence"));
        }
        scope.apps.push(Frozen {
            app: name,
            formation,
            maintenance_before: info.maintenance,
            keep_running,
        });
    }
    // Followers are advice, not a precondition: a data API that does not answer only loses it.
    let followers = match heroku
        .followers_of(&db.addon.id, &app.addons().await?)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("could not read which databases follow the Heroku database: {e:#}");
            Vec::new()
        }
    };
    for f in &followers {
        notes.push(format!("follower {f} follows the Heroku database: after the switch it goes stale (point readers at the migration's RDS read replica or the primary instead)"));
    }
    for n in &notes {
        tracing::warn!("{n}");
    }
    if !blockers.is_empty() {
        let list: Vec<String> = blockers
            .iter()
            .map(|b| format!("{} (fix: {})", b.message, b.fix))
            .collect();
        return Err(Error::new(
            Kind::Blocked,
            format!(
                "app {} is not ready for the cutover:\n  - {}",
                opts.app,
                list.join("\n  - ")
            ),
        )
        .with_fix("fix the items above and re-run; nothing was changed"));
    }
    let needed = opts.release_timeout + opts.dyno_timeout * 2 + Duration::from_secs(600);
    crate::heroku::client::token_lasts(heroku.token_expires_in().await?, needed)?;
    let mut plan = plan_lines(opts, &info.name, &db, &formation, info.maintenance, &source);
    let expected = match crate::pg::status::read(&opts.target).await {
        Ok(status) => {
            // The estimate never stops a cutover: without the dynos it assumes their times.
            let dynos = app.dynos().await.unwrap_or_default();
            estimate::estimate(&src, &tgt, &status, facts.coverage.as_ref(), &dynos)
                .await
                .ok()
        }
        Err(_) => None,
    };
    if let Some(e) = &expected {
        plan.extend(e.lines());
    }
    for (v, concurrently) in sequences::matviews_concurrently(&tgt).await? {
        plan.push(if concurrently {
            format!("materialized view {v}: refreshed before the freeze, and CONCURRENTLY after the switch (readers not blocked)")
        } else {
            format!("materialized view {v}: refreshed before the freeze, and after the switch blocking its readers meanwhile (give it a unique index to refresh it CONCURRENTLY)")
        });
    }
    plan.extend(attachments::plan_lines(
        &opts.app,
        &everywhere,
        &scope.moves,
    ));
    plan.extend(notes);
    plan.extend(Step::ALL.iter().map(|s| s.describe().to_string()));
    if opts.dry_run {
        return Ok(Report {
            app: opts.app.clone(),
            outcome: "dry-run".into(),
            steps: Vec::new(),
            downtime_s: None,
            write_freeze_s: None,
            release: None,
            database: opts.target.to_string(),
            plan,
            expected,
        });
    }
    if !confirm(&plan)? {
        return Err(Error::usage("cutover not confirmed; nothing was changed"));
    }
    // The records are created only now: a cutover refused before this point leaves the target
    // as it was.
    store::ensure_cutover_tables(&tgt).await?;

    let saved = serde_json::to_value(&formation)
        .map_err(|e| Error::other("saving the formation").with_source(e))?;
    let scope_json = serde_json::to_value(&scope)
        .map_err(|e| Error::other("saving the cutover's scope").with_source(e))?;
    let id = store::start_cutover(
        &tgt,
        &opts.app,
        &db.addon.id,
        &db.addon.name,
        &saved,
        info.maintenance,
        previous.is_some(),
    )
    .await?;
    store::record_cutover_step(
        &tgt,
        id,
        Step::Checked.as_str(),
        Some(&serde_json::json!({ "formation": saved, "maintenance_before": info.maintenance, "scope": scope_json })),
    )
    .await?;
    // Materialized views are refreshed now, before the freeze, not during it.
    let views = sequences::refresh_matviews(&tgt).await?;
    if views > 0 {
        tracing::info!("refreshed {views} materialized view(s) on the target before the freeze");
    }
    let ctx = Freeze {
        heroku,
        tgt: &tgt,
        src: &src,
        source: &source,
        opts,
        id,
        scope: &scope,
        db: &db,
        cancel: &signals.cancel,
        sink,
    };
    // The freeze, then what the switch needs, then the switch's record: a failure anywhere
    // before that record commits is rolled back.
    let prepared = async {
        ctx.run().await?;
        // The token must last through the switch (the freeze may have taken long).
        crate::heroku::client::token_lasts(
            heroku.token_expires_in().await?,
            opts.release_timeout + opts.dyno_timeout * 2,
        )?;
        let release_before = app.latest_release().await?.map(|r| r.version).unwrap_or(0);
        // POINT OF NO RETURN. From here on the switch runs to completion: Ctrl-C no longer
        // stops it, and a re-run after a crash continues it. Recorded together with the switch
        // on the follow row: every follower stops for good at its next batch.
        signals
            .past_point_of_no_return
            .store(true, Ordering::SeqCst);
        store::record_switch(
            &tgt,
            id,
            &serde_json::json!({ "release_before": release_before }),
        )
        .await
        .map(|_| ())
    }
    .await;
    if let Err(e) = prepared {
        let rec = store::last_cutover(&tgt)
            .await?
            .ok_or_else(|| Error::other("the cutover record vanished"))?;
        if rec
            .steps
            .iter()
            .any(|s| s.0 == Step::PointOfNoReturn.as_str())
        {
            // The record committed (its answer was lost): the switch goes forward.
            tracing::warn!("{e:#}; the point of no return was recorded: continuing the switch");
        } else {
            signals
                .past_point_of_no_return
                .store(false, Ordering::SeqCst);
            let why = format!("{e:#}");
            tracing::warn!("cutover failed before the point of no return: {why}; rolling back");
            return Err(match rollback(heroku, &tgt, &rec, opts, &why, Some(&src)).await {
                Ok(()) => {
                    let fix = e
                        .fix()
                        .unwrap_or("fix the cause above, then run `heroku2rds cutover` again")
                        .to_string();
                    Error::new(
                        e.kind(),
                        "cutover rolled back, the app is as before (maintenance, formation and DATABASE_URL unchanged)",
                    )
                    .with_cause(e.cause().clone())
                    .with_source(e)
                    .with_fix(fix)
                }
                Err(r) => Error::other(format!(
                    "cutover failed before the point of no return ({why}) and the rollback failed too: {r:#}"
                ))
                .with_fix("run `heroku2rds cutover` again: it finishes the rollback first"),
            });
        }
    }
    tracing::info!(
        "point of no return: switching DATABASE_URL (Ctrl-C no longer stops the cutover)"
    );
    sink.info(
        "cutover",
        "point of no return: switching DATABASE_URL (Ctrl-C no longer stops the cutover)",
    );
    // The fence stays up and now says where the database went.
    if let Err(e) = fence::raise(&src, &Notice::Moved(opts.target.to_string())).await {
        tracing::warn!("could not update the write fence's message: {e:#}");
    }
    drop(src);
    let rec = store::last_cutover(&tgt)
        .await?
        .ok_or_else(|| Error::other("the cutover record vanished"))?;
    forward(heroku, &tgt, rec, opts, sink).await
}

/// Source URL: `--source`, else the app's `DATABASE_URL` (TLS required when it says nothing).
/// Also says when `--source` names another database than `DATABASE_URL`.
fn resolve_source(opts: &Options, heroku_url: Option<&str>) -> Result<(ConnSpec, Option<String>)> {
    let from_heroku = heroku_url
        .map(|u| {
            let u = crate::heroku::app::with_tls_required(u);
            ConnSpec::parse(&u, "DATABASE_URL of the app")
        })
        .transpose()?;
    match (&opts.source, from_heroku) {
        (Some(s), Some(h)) => {
            let mismatch = (replicate::source_identity(s) != replicate::source_identity(&h))
                .then(|| format!("--source is {}, but the app's DATABASE_URL is {}", s, h));
            Ok((s.clone(), mismatch))
        }
        (Some(s), None) => Ok((s.clone(), None)),
        (None, Some(h)) => Ok((h.with_application_name("heroku2rds cutover"), None)),
        (None, None) => Err(Error::usage(format!(
            "app {} has no DATABASE_URL to read the source from",
            opts.app
        ))
        .with_fix("pass the Heroku database URL as --source")),
    }
}

/// Reads the readiness facts from the two databases.
async fn gather(src: &Client, tgt: &Client) -> Result<Facts> {
    let mut f = Facts {
        phase: store::load(tgt).await?.map(|m| m.phase),
        ..Default::default()
    };
    let has_log: bool = src
        .query_one("SELECT to_regclass('heroku2rds.changes') IS NOT NULL", &[])
        .await
        .map_err(|e| query_error(e, "looking for the change log"))?
        .get(0);
    if has_log {
        let r = src
            .query_one(
                "SELECT count(*), extract(epoch FROM now() - min(at))::float8 FROM heroku2rds.changes",
                &[],
            )
            .await
            .map_err(|e| query_error(e, "measuring the backlog"))?;
        f.backlog = r.get(0);
        f.oldest_change_s = r.get(1);
    } else if f.phase.is_some() {
        f.schema_changes
            .push("the change log is missing on the source (capture removed?)".into());
    }
    f.follow_stopped = store::follow_report(tgt)
        .await?
        .and_then(|r| r.stopped_reason);
    if f.phase.is_some() {
        store::upgrade(tgt).await?;
        f.coverage = verify::ranges::coverage(tgt).await?;
        if f.coverage.as_ref().is_some_and(|c| c.difference_count > 0) && has_log {
            // Rows fixed since they were found clear here.
            verify::ranges::recheck_differences(src, tgt).await?;
            f.coverage = verify::ranges::coverage(tgt).await?;
        }
    }
    f.target_in_recovery = tgt
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| query_error(e, "checking the target"))?
        .get(0);
    if f.phase.is_some() && has_log {
        let tables = captured_tables(tgt).await?;
        f.schema_changes.extend(
            apply::schema_changes(src, &tables)
                .await?
                .into_iter()
                .map(|c| format!("{}: {}", c.table, c.what)),
        );
    }
    Ok(f)
}

/// Tables by mode as recorded at the start of the migration.
async fn tables_with_mode(tgt: &Client, mode: &str) -> Result<Vec<Table>> {
    let modes = store::table_modes(tgt).await?;
    Ok(replicate::load_tables(tgt)
        .await?
        .into_iter()
        .filter(|(id, _)| modes.get(id).is_some_and(|m| m == mode))
        .map(|(_, t)| t)
        .collect())
}

/// The tables whose changes are captured, by source oid.
async fn captured_tables(tgt: &Client) -> Result<std::collections::HashMap<u32, Table>> {
    Ok(tables_with_mode(tgt, "copy")
        .await?
        .into_iter()
        .filter(|t| t.has_key())
        .map(|t| (t.oid, t))
        .collect())
}

fn plan_lines(
    opts: &Options,
    app: &str,
    db: &Database,
    formation: &[Process],
    maintenance: bool,
    source: &ConnSpec,
) -> Vec<String> {
    let procs: Vec<String> = formation
        .iter()
        .map(|p| format!("{}={}:{}", p.process_type, p.quantity, p.size))
        .collect();
    let lines = vec![format!(
        "app {app}: Heroku Postgres add-on {} ({}) at {source} -> {}; formation {}; maintenance now {}",
        db.addon.name,
        db.addon.plan.name,
        opts.target,
        if procs.is_empty() { "(none)".into() } else { procs.join(" ") },
        if maintenance { "on" } else { "off" }
    )];
    lines
}
fn report(opts: &Options, rec: &CutoverRecord, outcome: &str) -> Report {
    let at = |s: Step| rec.steps.iter().find(|x| x.0 == s.as_str()).map(|x| x.2);
    let span = |a: Step, b: Step| Some(at(b)? - at(a)?);
    Report {
        app: rec.app.clone(),
        outcome: outcome.into(),
        steps: rec
            .steps
            .iter()
            .map(|(s, _, t)| StepTime {
                step: s.clone(),
                at: *t,
            })
            .collect(),
        downtime_s: span(Step::MaintenanceOn, Step::MaintenanceOff),
        write_freeze_s: span(Step::DynosStopped, Step::DynosUp),
        release: rec
            .steps
            .iter()
            .find(|s| s.0 == Step::ReleaseSucceeded.as_str())
            .and_then(|s| s.1.as_ref()?.get("version")?.as_i64()),
        database: ConnSpec::parse(&opts.app_url, "target app")
            .map(|c| c.to_string())
            .unwrap_or_default(),
        plan: Vec::new(),
        expected: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_rollback_is_recognized_by_its_cause() {
        let cases = [
            (rolled_back_error("app"), true),
            // The same words without the cause are not the outcome, and the cause survives context.
            (
                Error::other("rolled back the interrupted cutover of app x"),
                false,
            ),
            (rolled_back_error("app").context("cutover"), true),
            (
                Error::usage("the target holds no heroku2rds migration"),
                false,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(rolled_back_interrupted(&e), want, "{e}");
        }
        assert!(rolled_back_error("shop").message().contains("app shop"));
    }
}
