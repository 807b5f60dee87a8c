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

use crate::error::{Error, Kind, Result};
use crate::heroku::app::{App, Database, Dyno, Process};
use crate::heroku::client::Client as Heroku;
use crate::pg::catalog::Table;
use crate::pg::conn::{query_error, ConnSpec, SslMode};
use crate::pg::{apply, copy, replicate, sequences, verify};
use crate::state::{self, CutoverRecord, Phase, RunnerLock};

/// The attachment name under which the Heroku database stays attached after the switch (its URL
/// stays available as `HEROKU2RDS_PREVIOUS_DATABASE_URL`).
pub const PREVIOUS_ATTACHMENT: &str = "HEROKU2RDS_PREVIOUS_DATABASE";

/// The steps, in order. Those after [`Step::PointOfNoReturn`] only ever go forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Preconditions held; formation and maintenance saved.
    Checked,
    /// Maintenance mode on.
    MaintenanceOn,
    /// Every process type scaled to 0, one-off dynos stopped.
    ScaledDown,
    /// No dyno runs: the write freeze begins.
    DynosStopped,
    /// No session of the app left on the source.
    SessionsEnded,
    /// The change log is empty and applied.
    Drained,
    /// Keyless tables copied again.
    KeylessRecopied,
    /// Sequences set exactly, foreign keys validated.
    SequencesSynced,
    /// Materialized views refreshed.
    MatviewsRefreshed,
    /// The final verification found no difference.
    Verified,
    /// The Heroku database is also attached as [`PREVIOUS_ATTACHMENT`].
    PreviousAttached,
    /// Recorded before the first irreversible change.
    PointOfNoReturn,
    /// The `DATABASE` attachment removed.
    DatabaseDetached,
    /// `DATABASE_URL` points at the target.
    DatabaseUrlSet,
    /// The release of the switch succeeded.
    ReleaseSucceeded,
    /// The saved formation is back (only now: dynos started while the release is pending
    /// would run the previous release, with the previous `DATABASE_URL`).
    FormationRestored,
    /// Every dyno of the formation is up on that release.
    DynosUp,
    /// Maintenance off (if it was off before).
    MaintenanceOff,
    /// Done.
    Completed,
}

impl Step {
    /// Every step in order.
    pub const ALL: [Step; 19] = [
        Step::Checked,
        Step::MaintenanceOn,
        Step::ScaledDown,
        Step::DynosStopped,
        Step::SessionsEnded,
        Step::Drained,
        Step::KeylessRecopied,
        Step::SequencesSynced,
        Step::MatviewsRefreshed,
        Step::Verified,
        Step::PreviousAttached,
        Step::PointOfNoReturn,
        Step::DatabaseDetached,
        Step::DatabaseUrlSet,
        Step::ReleaseSucceeded,
        Step::FormationRestored,
        Step::DynosUp,
        Step::MaintenanceOff,
        Step::Completed,
    ];

    /// The recorded name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Checked => "checked",
            Step::MaintenanceOn => "maintenance-on",
            Step::ScaledDown => "scaled-down",
            Step::DynosStopped => "dynos-stopped",
            Step::SessionsEnded => "sessions-ended",
            Step::Drained => "drained",
            Step::KeylessRecopied => "keyless-recopied",
            Step::SequencesSynced => "sequences-synced",
            Step::MatviewsRefreshed => "matviews-refreshed",
            Step::Verified => "verified",
            Step::PreviousAttached => "previous-attached",
            Step::PointOfNoReturn => "point-of-no-return",
            Step::DatabaseDetached => "database-detached",
            Step::DatabaseUrlSet => "database-url-set",
            Step::FormationRestored => "formation-restored",
            Step::ReleaseSucceeded => "release-succeeded",
            Step::DynosUp => "dynos-up",
            Step::MaintenanceOff => "maintenance-off",
            Step::Completed => "completed",
        }
    }

    /// Parses a recorded name (rollback records and unknown names give None).
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// What the step does to the app or the databases, for the plan.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Checked => "check readiness; save the formation and the maintenance setting",
            Step::MaintenanceOn => "turn maintenance mode on (the router answers 503)",
            Step::ScaledDown => "scale every process type to 0 and stop one-off dynos",
            Step::DynosStopped => "wait until no dyno runs (writes are frozen from here)",
            Step::SessionsEnded => "wait for the app's sessions on the Heroku database to end; terminate stragglers after the grace period",
            Step::Drained => "apply the change log until it is empty",
            Step::KeylessRecopied => "copy tables without a key again (--keyless recopy)",
            Step::SequencesSynced => "set every sequence exactly; validate foreign keys",
            Step::MatviewsRefreshed => "refresh materialized views on the target",
            Step::Verified => "final verification: any difference rolls back",
            Step::PreviousAttached => "attach the Heroku database also as HEROKU2RDS_PREVIOUS_DATABASE (its URL stays available)",
            Step::PointOfNoReturn => "POINT OF NO RETURN: from here the switch only goes forward",
            Step::DatabaseDetached => "detach DATABASE from the Heroku database",
            Step::DatabaseUrlSet => "set DATABASE_URL to the target",
            Step::ReleaseSucceeded => "wait for the new release to succeed (dynos started before would still get the old DATABASE_URL)",
            Step::FormationRestored => "restore the saved formation",
            Step::DynosUp => "wait for every dyno to be up on the new release",
            Step::MaintenanceOff => "turn maintenance mode off (if it was off before)",
            Step::Completed => "done: report the downtime",
        }
    }
}

/// What a run does given the newest recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No unfinished attempt: start a new one.
    Fresh,
    /// An attempt stopped before the point of no return: roll it back (and stop).
    RollBack,
    /// An attempt passed the point of no return: continue from this step.
    Continue(Step),
    /// The newest attempt completed: nothing to do.
    AlreadyCompleted,
}

/// Decides what a (re-)run does from the newest attempt's outcome and recorded steps. Pure.
pub fn resume(outcome: Option<&str>, steps: &BTreeSet<Step>) -> Option<Resume> {
    Some(match outcome {
        Some("completed") => Resume::AlreadyCompleted,
        Some("rolled-back") => Resume::Fresh,
        Some(_) => return None,
        None if steps.contains(&Step::PointOfNoReturn) => Resume::Continue(
            Step::ALL
                .into_iter()
                .find(|s| *s > Step::PointOfNoReturn && !steps.contains(s))
                .unwrap_or(Step::Completed),
        ),
        None => Resume::RollBack,
    })
}

/// Facts the readiness check decides on.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Phase of the migration on the target (None: no migration there).
    pub phase: Option<Phase>,
    /// Change-log rows waiting on the source.
    pub backlog: i64,
    /// Age in seconds of the oldest of them.
    pub oldest_change_s: Option<f64>,
    /// Why the follower stopped, if it recorded a reason.
    pub follow_stopped: Option<String>,
    /// Schema changes on the source since the copy.
    pub schema_changes: Vec<String>,
    /// The target is a read-only replica.
    pub target_in_recovery: bool,
    /// The add-on is attached to the app as `DATABASE`.
    pub database_attached: bool,
    /// `--source` names another database than the app's `DATABASE_URL`.
    pub source_mismatch: Option<String>,
    /// An attachment named [`PREVIOUS_ATTACHMENT`] exists for another add-on.
    pub previous_taken: Option<String>,
    /// The formation was read (may be empty).
    pub formation_known: bool,
}

/// Why the cutover cannot start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// Short code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// The readiness check. Pure: empty means ready.
pub fn readiness(f: &Facts, max_lag: Duration) -> Vec<Blocker> {
    let mut out = Vec::new();
    let mut block = |code, message: String, fix: &str| {
        out.push(Blocker {
            code,
            message,
            fix: fix.to_string(),
        })
    };
    match f.phase {
        None => block(
            "no-migration",
            "the target holds no heroku2rds migration".into(),
            "run `heroku2rds replicate` first (and keep it following with --until forever)",
        ),
        Some(p) if p != Phase::Copied => block(
            "copy-unfinished",
            format!("the copy is not finished (phase {})", p.as_str()),
            "let `heroku2rds replicate` finish; `heroku2rds status` shows its progress",
        ),
        Some(_) => {}
    }
    let lag = if f.backlog > 0 {
        f.oldest_change_s.unwrap_or(0.0)
    } else {
        0.0
    };
    if lag > max_lag.as_secs_f64() {
        block(
            "lagging",
            format!(
                "replication lags: {} change(s) waiting, the oldest {:.0}s old (limit {}s)",
                f.backlog,
                lag,
                max_lag.as_secs()
            ),
            "keep `heroku2rds replicate --until forever` running until it has caught up (or raise --max-lag-s: the drain then happens during the downtime)",
        );
    }
    if let Some(r) = &f.follow_stopped {
        if r != "interrupted" {
            block(
                "follow-stopped",
                format!("applying changes stopped: {r}"),
                "fix what stopped it, then let replicate catch up",
            );
        }
    }
    if !f.schema_changes.is_empty() {
        block(
            "schema-changed",
            format!(
                "the source schema changed since the copy: {}",
                f.schema_changes.join("; ")
            ),
            "apply the same DDL to the target and start the migration of those tables over",
        );
    }
    if f.target_in_recovery {
        block(
            "target-read-only",
            "the target is a read-only replica".into(),
            "point --target at the primary",
        );
    }
    if !f.database_attached {
        block(
            "no-database-attachment",
            "the Heroku Postgres add-on is not attached to the app as DATABASE".into(),
            "the app must use its Heroku Postgres database through DATABASE_URL; check `heroku addons -a APP`",
        );
    }
    if let Some(m) = &f.source_mismatch {
        block(
            "source-mismatch",
            m.clone(),
            "pass the app's DATABASE_URL as --source (or leave --source out: it is read from Heroku)",
        );
    }
    if let Some(p) = &f.previous_taken {
        block(
            "previous-attachment-taken",
            p.clone(),
            "remove that attachment (`heroku addons:detach`) before the cutover",
        );
    }
    if !f.formation_known {
        block(
            "formation-unknown",
            "the app's formation could not be read".into(),
            "check the token's permissions on the app",
        );
    }
    out
}

/// A change a rollback makes to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackAction {
    /// Remove the attachment the cutover added (by id).
    DetachPrevious(String),
    /// Scale these process types back.
    Scale(Vec<Process>),
    /// Turn maintenance off.
    MaintenanceOff,
}

/// What a rollback must change, comparing the saved state with the live one. Pure. Never
/// touches `DATABASE_URL` or the `DATABASE` attachment.
pub fn rollback_plan(
    saved: &[Process],
    maintenance_before: bool,
    live_formation: &[Process],
    live_maintenance: bool,
    previous_attachment: Option<&str>,
) -> Vec<RollbackAction> {
    let mut actions = Vec::new();
    if let Some(id) = previous_attachment {
        actions.push(RollbackAction::DetachPrevious(id.to_string()));
    }
    let live: BTreeMap<&str, &Process> = live_formation
        .iter()
        .map(|p| (p.process_type.as_str(), p))
        .collect();
    let scale: Vec<Process> = saved
        .iter()
        .filter(|p| {
            live.get(p.process_type.as_str())
                .is_none_or(|l| l.quantity != p.quantity || !l.size.eq_ignore_ascii_case(&p.size))
        })
        .cloned()
        .collect();
    if !scale.is_empty() {
        actions.push(RollbackAction::Scale(scale));
    }
    if live_maintenance && !maintenance_before {
        actions.push(RollbackAction::MaintenanceOff);
    }
    actions
}

/// Whether the formation is fully up on release `version` or later: per process type as many
/// dynos `up` on it as the saved quantity, and no dyno of an older release still running. Pure.
pub fn formation_up(saved: &[Process], dynos: &[Dyno], version: i64) -> bool {
    saved.iter().all(|p| {
        let of_type: Vec<&Dyno> = dynos
            .iter()
            .filter(|d| d.process_type == p.process_type && d.may_run())
            .collect();
        let up_on_new = of_type
            .iter()
            .filter(|d| d.state == "up" && d.release.as_ref().is_some_and(|r| r.version >= version))
            .count() as i64;
        let old = of_type
            .iter()
            .any(|d| d.release.as_ref().is_none_or(|r| r.version < version));
        up_on_new >= p.quantity && !old
    })
}

/// Checks the URL the app will get as `DATABASE_URL`: a valid PostgreSQL URL that requires TLS.
pub fn check_app_url(raw: &str) -> Result<ConnSpec> {
    let spec = ConnSpec::parse(raw, "target app")?;
    // What the app's own driver will do with the URL as written (libpq defaults to prefer,
    // which falls back to plaintext), not what heroku2rds makes of it.
    let written = url::Url::parse(raw.trim())
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "sslmode")
                .map(|(_, v)| v.into_owned())
        })
        .map(|m| SslMode::parse(&m))
        .transpose()?
        .unwrap_or(SslMode::Prefer);
    match written {
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Ok(spec),
        other => Err(Error::usage(format!(
            "the URL the app will use (--target-app-url, default --target) has sslmode={}: the app could connect without TLS",
            other.as_str()
        ))
        .with_fix("add sslmode=require (or verify-full with sslrootcert) to the URL")),
    }
}

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
    /// Poll interval of the waits.
    pub poll: Duration,
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

/// How the error of a run that only rolled back an interrupted attempt begins.
const ROLLED_BACK_INTERRUPTED: &str = "rolled back the interrupted cutover";

/// True for the error of a run that rolled back an interrupted attempt and switched nothing:
/// running again starts a fresh cutover.
pub fn rolled_back_interrupted(e: &Error) -> bool {
    e.to_string().starts_with(ROLLED_BACK_INTERRUPTED)
}

/// Flags shared with the signal handler.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Set on Ctrl-C / SIGTERM.
    pub cancel: Arc<AtomicBool>,
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
) -> Result<Report> {
    let tgt = opts.target.connect().await?;
    if state::load(&tgt).await?.is_none() {
        return Err(Error::usage("the target holds no heroku2rds migration")
            .with_fix("run `heroku2rds replicate --source ... --target ...` first, with the same --target"));
    }
    // One cutover at a time; a replicate running beside it is fine (it is the live follower).
    let _lock = RunnerLock::acquire_cutover(opts.target.connect().await?).await?;
    let has_records: bool = tgt
        .query_one("SELECT to_regclass('heroku2rds.cutovers') IS NOT NULL", &[])
        .await
        .map_err(|e| query_error(e, "reading the cutover records"))?
        .get(0);
    let last = if has_records {
        state::last_cutover(&tgt).await?
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
                rollback(&app, &tgt, rec, opts, why).await?;
                return Err(Error::other(format!(
                    "{ROLLED_BACK_INTERRUPTED} of app {}: maintenance, formation and DATABASE_URL are as before",
                    opts.app
                ))
                .with_fix("run `heroku2rds cutover` again to switch"));
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
                return forward(&app, &tgt, rec.clone(), opts).await;
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
    let blockers = readiness(&facts, opts.max_lag);
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
    let plan = plan_lines(opts, &info.name, &db, &formation, info.maintenance, &source);
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
        });
    }
    if !confirm(&plan)? {
        return Err(Error::usage("cutover not confirmed; nothing was changed"));
    }
    // The records are created only now: a cutover refused before this point leaves the target
    // as it was.
    state::ensure_cutover_tables(&tgt).await?;

    let saved = serde_json::to_value(&formation)
        .map_err(|e| Error::other(format!("saving the formation: {e}")))?;
    let id = state::start_cutover(
        &tgt,
        &opts.app,
        &db.addon.id,
        &db.addon.name,
        &saved,
        info.maintenance,
        previous.is_some(),
    )
    .await?;
    state::record_cutover_step(
        &tgt,
        id,
        Step::Checked.as_str(),
        Some(&serde_json::json!({ "formation": saved, "maintenance_before": info.maintenance })),
    )
    .await?;
    let ctx = Freeze {
        app: &app,
        tgt: &tgt,
        src: &src,
        source: &source,
        opts,
        id,
        formation: &formation,
        maintenance_before: info.maintenance,
        db: &db,
        cancel: &signals.cancel,
    };
    if let Err(e) = ctx.run().await {
        let rec = state::last_cutover(&tgt)
            .await?
            .ok_or_else(|| Error::other("the cutover record vanished"))?;
        let why = e.message().to_string();
        tracing::warn!("cutover failed before the point of no return: {why}; rolling back");
        return Err(match rollback(&app, &tgt, &rec, opts, &why).await {
            Ok(()) => Error::new(
                e.kind(),
                format!(
                    "cutover rolled back, the app is as before (maintenance, formation and DATABASE_URL unchanged): {why}"
                ),
            )
            .with_fix(e.fix().unwrap_or("fix the cause above, then run `heroku2rds cutover` again").to_string()),
            Err(r) => Error::other(format!(
                "cutover failed before the point of no return ({why}) and the rollback failed too: {}",
                r.message()
            ))
            .with_fix("run `heroku2rds cutover` again: it finishes the rollback first"),
        });
    }
    // POINT OF NO RETURN. From here on the switch runs to completion: Ctrl-C no longer stops
    // it, and a re-run after a crash continues it.
    signals
        .past_point_of_no_return
        .store(true, Ordering::SeqCst);
    let release_before = app.latest_release().await?.map(|r| r.version).unwrap_or(0);
    state::record_cutover_step(
        &tgt,
        id,
        Step::PointOfNoReturn.as_str(),
        Some(&serde_json::json!({ "release_before": release_before })),
    )
    .await?;
    tracing::info!(
        "point of no return: switching DATABASE_URL (Ctrl-C no longer stops the cutover)"
    );
    drop(src);
    let rec = state::last_cutover(&tgt)
        .await?
        .ok_or_else(|| Error::other("the cutover record vanished"))?;
    forward(&app, &tgt, rec, opts).await
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
        phase: state::load(tgt).await?.map(|m| m.phase),
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
    f.follow_stopped = tgt
        .query_opt("SELECT stopped_reason FROM heroku2rds.follow", &[])
        .await
        .map_err(|e| query_error(e, "reading follow state"))?
        .and_then(|r| r.get(0));
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
    let modes: BTreeMap<i32, String> = tgt
        .query("SELECT id, mode FROM heroku2rds.tables", &[])
        .await
        .map_err(|e| query_error(e, "reading table modes"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
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
    let mut lines = vec![format!(
        "app {app}: Heroku Postgres add-on {} ({}) at {source} -> {}; formation {}; maintenance now {}",
        db.addon.name,
        db.addon.plan.name,
        opts.target,
        if procs.is_empty() { "(none)".into() } else { procs.join(" ") },
        if maintenance { "on" } else { "off" }
    )];
    lines.extend(Step::ALL.iter().map(|s| s.describe().to_string()));
    lines
}

/// The pre-point-of-no-return part: everything here is undone by [`rollback`].
struct Freeze<'a> {
    app: &'a App<'a>,
    tgt: &'a Client,
    src: &'a Client,
    source: &'a ConnSpec,
    opts: &'a Options,
    id: i32,
    formation: &'a [Process],
    maintenance_before: bool,
    db: &'a Database,
    cancel: &'a AtomicBool,
}

impl Freeze<'_> {
    async fn record(&self, step: Step, detail: Option<serde_json::Value>) -> Result<f64> {
        let at =
            state::record_cutover_step(self.tgt, self.id, step.as_str(), detail.as_ref()).await?;
        tracing::info!("cutover: {}", step.as_str());
        Ok(at)
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::other(
                "interrupted (Ctrl-C/SIGTERM) before the point of no return",
            ));
        }
        Ok(())
    }

    async fn run(&self) -> Result<()> {
        let opts = self.opts;
        if !self.maintenance_before {
            self.app.set_maintenance(true).await?;
        }
        self.record(Step::MaintenanceOn, None).await?;
        self.check_cancel()?;

        let zero: Vec<Process> = self
            .formation
            .iter()
            .filter(|p| p.quantity != 0)
            .map(|p| Process {
                quantity: 0,
                ..p.clone()
            })
            .collect();
        self.app.scale(&zero).await?;
        self.record(Step::ScaledDown, None).await?;

        let deadline = Instant::now() + opts.dyno_timeout;
        let mut stopped: BTreeSet<String> = BTreeSet::new();
        loop {
            let running: Vec<Dyno> = self
                .app
                .dynos()
                .await?
                .into_iter()
                .filter(|d| d.may_run())
                .collect();
            if running.is_empty() {
                break;
            }
            for d in &running {
                let in_formation = self
                    .formation
                    .iter()
                    .any(|p| p.process_type == d.process_type);
                if !in_formation && stopped.insert(d.id.clone()) {
                    tracing::info!("stopping one-off dyno {}", d.name);
                    self.app.stop_dyno(d).await?;
                }
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = running.iter().map(|d| d.name.as_str()).collect();
                return Err(Error::other(format!(
                    "dynos still running {}s after scaling to 0: {}",
                    opts.dyno_timeout.as_secs(),
                    names.join(", ")
                )));
            }
            self.check_cancel()?;
            tokio::time::sleep(opts.poll).await;
        }
        self.record(Step::DynosStopped, None).await?;
        self.check_cancel()?;

        let terminated = self.end_sessions().await?;
        let freeze_at = self
            .record(
                Step::SessionsEnded,
                Some(serde_json::json!({ "terminated": terminated })),
            )
            .await?;
        self.check_cancel()?;

        let changes = apply::schema_changes(self.src, &captured_tables(self.tgt).await?).await?;
        if let Some(c) = changes.first() {
            return Err(Error::new(
                Kind::Blocked,
                format!("schema change on the source: {}: {}", c.table, c.what),
            ));
        }
        let applied = self.drain(freeze_at).await?;
        self.record(
            Step::Drained,
            Some(serde_json::json!({ "applied_changes": applied })),
        )
        .await?;
        self.check_cancel()?;

        let mut tgt = opts.target.connect().await?;
        let mut recopied = Vec::new();
        for t in tables_with_mode(self.tgt, "recopy").await? {
            let rows = copy::recopy_table(self.src, &mut tgt, &t).await?;
            tracing::info!("copied {} again ({rows} rows)", t.display_name());
            recopied.push(t.display_name());
        }
        self.record(
            Step::KeylessRecopied,
            Some(serde_json::json!({ "tables": recopied })),
        )
        .await?;
        self.check_cancel()?;

        let n = sequences::sync(self.src, self.tgt).await?;
        let left = replicate::validate_foreign_keys(self.tgt).await?;
        if left > 0 {
            return Err(Error::new(
                Kind::Differences,
                format!("{left} foreign key(s) on the target do not validate with writes stopped"),
            )
            .with_fix("run `heroku2rds verify` to find the differing rows"));
        }
        self.record(
            Step::SequencesSynced,
            Some(serde_json::json!({ "sequences": n })),
        )
        .await?;
        let m = sequences::refresh_matviews(self.tgt).await?;
        self.record(
            Step::MatviewsRefreshed,
            Some(serde_json::json!({ "views": m })),
        )
        .await?;
        self.check_cancel()?;

        let report = verify::run(self.source, &opts.target, opts.jobs.max(1)).await?;
        if !report.equal {
            let bad: Vec<String> = report
                .tables
                .iter()
                .filter(|t| !t.equal())
                .map(|t| {
                    format!(
                        "{} ({} rows on the source, {} on the target, {} differing row(s){})",
                        t.table,
                        t.source_rows,
                        t.target_rows,
                        t.differences_found,
                        t.error
                            .as_deref()
                            .map(|e| format!(", {e}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            return Err(Error::new(
                Kind::Differences,
                format!("the final verification found differences: {}", bad.join("; ")),
            )
            .with_fix("run `heroku2rds verify --json` for the differing keys; fix the target, then run cutover again"));
        }
        self.record(
            Step::Verified,
            Some(serde_json::json!({ "tables": report.tables.len() })),
        )
        .await?;
        self.check_cancel()?;

        let attachments = self.app.attachments().await?;
        let exists = attachments
            .iter()
            .any(|a| a.name == PREVIOUS_ATTACHMENT && a.addon.id == self.db.addon.id);
        if !exists {
            self.app
                .attach(&self.db.addon.id, PREVIOUS_ATTACHMENT)
                .await?;
        }
        self.record(Step::PreviousAttached, None).await?;
        self.check_cancel()
    }

    /// Waits for the app's sessions on the source to end, then terminates the rest. Returns how
    /// many were terminated.
    async fn end_sessions(&self) -> Result<usize> {
        const OTHERS: &str = "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND backend_type = 'client backend' AND application_name NOT LIKE 'heroku2rds%'";
        let deadline = Instant::now() + self.opts.session_grace;
        loop {
            let pids: Vec<i32> = self
                .src
                .query(OTHERS, &[])
                .await
                .map_err(|e| query_error(e, "listing sessions on the source"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if pids.is_empty() {
                return Ok(0);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "{} session(s) still on the source after {}s: terminating them",
                    pids.len(),
                    self.opts.session_grace.as_secs()
                );
                let mut n = 0;
                for pid in &pids {
                    let ok: bool = self
                        .src
                        .query_one("SELECT pg_terminate_backend($1)", &[pid])
                        .await
                        .map_err(|e| query_error(e, "terminating a session on the source"))?
                        .get(0);
                    n += usize::from(ok);
                }
                // Terminated sessions take a moment to go.
                for _ in 0..50 {
                    let left = self
                        .src
                        .query(OTHERS, &[])
                        .await
                        .map_err(|e| query_error(e, "listing sessions on the source"))?
                        .len();
                    if left == 0 {
                        return Ok(n);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return Err(Error::other(
                    "sessions of other clients stay connected to the source after being terminated",
                ));
            }
            self.check_cancel()?;
            tokio::time::sleep(self.opts.poll.min(Duration::from_millis(500))).await;
        }
    }

    /// Empties the change log: applies it ourselves when no follower runs, else waits for the
    /// follower. Returns the changes this process applied.
    async fn drain(&self, freeze_at: f64) -> Result<u64> {
        let lock = RunnerLock::try_acquire(self.opts.target.connect().await?, "cutover").await?;
        if lock.is_some() {
            let tables = captured_tables(self.tgt).await?;
            let mut tgt = self.opts.target.connect().await?;
            let mut total = 0;
            loop {
                let r = apply::apply_batch(self.src, &mut tgt, &tables, 5000).await?;
                total += r.changes;
                if r.changes == 0 {
                    return Ok(total);
                }
                self.check_cancel()?;
            }
        }
        tracing::info!(
            "a replicate process follows this target: waiting for it to empty the change log"
        );
        let deadline = Instant::now() + self.opts.drain_timeout;
        loop {
            let backlog: i64 = self
                .src
                .query_one("SELECT count(*) FROM heroku2rds.changes", &[])
                .await
                .map_err(|e| query_error(e, "reading the change log"))?
                .get(0);
            let r = self
                .tgt
                .query_one(
                    "SELECT coalesce(extract(epoch FROM updated_at)::float8, 0), caught_up, stopped_reason FROM heroku2rds.follow",
                    &[],
                )
                .await
                .map_err(|e| query_error(e, "reading the follower's progress"))?;
            let (updated, caught_up, stopped): (f64, bool, Option<String>) =
                (r.get(0), r.get(1), r.get(2));
            if let Some(s) = stopped.filter(|s| s != "interrupted") {
                return Err(Error::other(format!("the follower stopped applying: {s}")));
            }
            // An empty log seen after the freeze means every change was applied and committed
            // on the target (log rows are deleted only after their apply commits); the
            // follower's own record after the freeze confirms it.
            if backlog == 0 && caught_up && updated > freeze_at {
                return Ok(0);
            }
            if Instant::now() > deadline {
                return Err(Error::other(format!(
                    "the running replicate did not empty the change log within {}s ({backlog} change(s) left)",
                    self.opts.drain_timeout.as_secs()
                ))
                .with_fix("check that the replicate process is healthy (`heroku2rds status`), or stop it: cutover then applies the log itself"));
            }
            self.check_cancel()?;
            tokio::time::sleep(self.opts.poll.min(Duration::from_millis(500))).await;
        }
    }
}

/// Undoes everything before the point of no return, converging from the app's live state.
async fn rollback(
    app: &App<'_>,
    tgt: &Client,
    rec: &CutoverRecord,
    opts: &Options,
    why: &str,
) -> Result<()> {
    let saved: Vec<Process> = serde_json::from_value(rec.formation.clone())
        .map_err(|e| Error::other(format!("the saved formation is unreadable: {e}")))?;
    let _ = state::record_cutover_step(
        tgt,
        rec.id,
        "rollback-started",
        Some(&serde_json::json!({ "reason": why })),
    )
    .await;
    let info = app.info().await?;
    let live = app.formation().await?;
    let previous = if rec.previous_existed {
        None
    } else {
        app.attachments()
            .await?
            .into_iter()
            .find(|a| a.name == PREVIOUS_ATTACHMENT && a.addon.id == rec.addon_id)
            .map(|a| a.id)
    };
    let actions = rollback_plan(
        &saved,
        rec.maintenance_before,
        &live,
        info.maintenance,
        previous.as_deref(),
    );
    for a in &actions {
        match a {
            RollbackAction::DetachPrevious(id) => {
                tracing::info!("rollback: removing the {PREVIOUS_ATTACHMENT} attachment");
                app.detach(id).await?;
            }
            RollbackAction::Scale(p) => {
                tracing::info!("rollback: restoring the formation");
                app.scale(p).await?;
            }
            RollbackAction::MaintenanceOff => {}
        }
    }
    // Let the dynos come back before the router sends traffic to them again.
    let deadline = Instant::now() + opts.dyno_timeout;
    loop {
        if formation_up(&saved, &app.dynos().await?, 0) {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                "rollback: the dynos are not all up yet after {}s; continuing",
                opts.dyno_timeout.as_secs()
            );
            break;
        }
        tokio::time::sleep(opts.poll).await;
    }
    if actions.contains(&RollbackAction::MaintenanceOff) {
        tracing::info!("rollback: maintenance off");
        app.set_maintenance(false).await?;
    }
    state::finish_cutover(tgt, rec.id, "rolled-back", Some(why)).await?;
    tracing::info!("rollback complete: the app is as it was before the cutover");
    Ok(())
}

/// The part after the point of no return: every step converges from the app's live state, so it
/// can be repeated after a crash.
async fn forward(
    app: &App<'_>,
    tgt: &Client,
    rec: CutoverRecord,
    opts: &Options,
) -> Result<Report> {
    let done: BTreeSet<Step> = rec.steps.iter().filter_map(|s| Step::parse(&s.0)).collect();
    let saved: Vec<Process> = serde_json::from_value(rec.formation.clone())
        .map_err(|e| Error::other(format!("the saved formation is unreadable: {e}")))?;
    let release_before = rec
        .steps
        .iter()
        .find(|s| s.0 == Step::PointOfNoReturn.as_str())
        .and_then(|s| s.1.as_ref()?.get("release_before")?.as_i64())
        .unwrap_or(0);
    let finish = |e: Error| {
        e.with_fix("the database switch is past the point of no return: fix the cause and run `heroku2rds cutover` again, it continues from where it stopped")
    };
    let record = |step: Step, detail: Option<serde_json::Value>| async move {
        let at = state::record_cutover_step(tgt, rec.id, step.as_str(), detail.as_ref()).await?;
        tracing::info!("cutover: {}", step.as_str());
        Ok::<f64, Error>(at)
    };
    if !done.contains(&Step::DatabaseDetached) {
        let atts = app.attachments().await.map_err(finish)?;
        if let Some(a) = atts
            .iter()
            .find(|a| a.name == "DATABASE" && a.addon.id == rec.addon_id)
        {
            app.detach(&a.id).await.map_err(finish)?;
        }
        record(Step::DatabaseDetached, None).await?;
    }
    if !done.contains(&Step::DatabaseUrlSet) {
        let vars = app.config_vars().await.map_err(finish)?;
        if vars.get("DATABASE_URL").cloned().flatten().as_deref() != Some(opts.app_url.as_str()) {
            let mut set = BTreeMap::new();
            set.insert("DATABASE_URL".to_string(), Some(opts.app_url.clone()));
            app.set_config_vars(&set).await.map_err(finish)?;
        }
        record(Step::DatabaseUrlSet, None).await?;
    }
    let mut version = rec
        .steps
        .iter()
        .find(|s| s.0 == Step::ReleaseSucceeded.as_str())
        .and_then(|s| s.1.as_ref()?.get("version")?.as_i64());
    if !done.contains(&Step::ReleaseSucceeded) {
        let deadline = Instant::now() + opts.release_timeout;
        let v = loop {
            let latest = app.latest_release().await.map_err(finish)?;
            match latest {
                Some(r) if r.version > release_before && r.status == "succeeded" => {
                    break r.version
                }
                Some(r) if r.version > release_before && r.status == "failed" => {
                    return Err(finish(Error::other(format!(
                        "release v{} ({}) failed: the app's release phase did not accept the new DATABASE_URL",
                        r.version, r.description
                    ))));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(finish(Error::other(format!(
                    "the release of the switch did not succeed within {}s",
                    opts.release_timeout.as_secs()
                ))));
            }
            tokio::time::sleep(opts.poll).await;
        };
        record(
            Step::ReleaseSucceeded,
            Some(serde_json::json!({ "version": v })),
        )
        .await?;
        version = Some(v);
    }
    let version = version.unwrap_or(release_before + 1);
    if !done.contains(&Step::FormationRestored) {
        app.scale(&saved).await.map_err(finish)?;
        record(Step::FormationRestored, None).await?;
    }
    if !done.contains(&Step::DynosUp) {
        let deadline = Instant::now() + opts.dyno_timeout;
        loop {
            let dynos = app.dynos().await.map_err(finish)?;
            if formation_up(&saved, &dynos, version) {
                break;
            }
            if Instant::now() > deadline {
                return Err(finish(Error::other(format!(
                    "the dynos were not all up on release v{version} within {}s",
                    opts.dyno_timeout.as_secs()
                ))));
            }
            tokio::time::sleep(opts.poll).await;
        }
        record(Step::DynosUp, None).await?;
    }
    if !done.contains(&Step::MaintenanceOff) {
        if !rec.maintenance_before {
            app.set_maintenance(false).await.map_err(finish)?;
        }
        record(Step::MaintenanceOff, None).await?;
    }
    record(Step::Completed, None).await?;
    state::finish_cutover(tgt, rec.id, "completed", None).await?;
    let rec = state::last_cutover(tgt)
        .await?
        .ok_or_else(|| Error::other("the cutover record vanished"))?;
    Ok(report(opts, &rec, "completed"))
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heroku::app::ReleaseRef;

    fn steps(list: &[Step]) -> BTreeSet<Step> {
        list.iter().copied().collect()
    }

    #[test]
    fn step_names_round_trip_and_are_ordered() {
        for (i, s) in Step::ALL.iter().enumerate() {
            assert_eq!(Step::parse(s.as_str()), Some(*s));
            if i > 0 {
                assert!(Step::ALL[i - 1] < *s);
            }
        }
        assert_eq!(Step::parse("rollback-started"), None);
    }

    #[test]
    fn rerun_decisions() {
        assert_eq!(
            resume(Some("completed"), &steps(&Step::ALL)),
            Some(Resume::AlreadyCompleted)
        );
        assert_eq!(
            resume(Some("rolled-back"), &steps(&[Step::Checked])),
            Some(Resume::Fresh)
        );
        assert_eq!(resume(Some("bogus"), &steps(&[])), None);
        // Every prefix before the point of no return rolls back.
        let pnr = Step::ALL
            .iter()
            .position(|s| *s == Step::PointOfNoReturn)
            .expect("pnr");
        for n in 0..pnr {
            assert_eq!(
                resume(None, &steps(&Step::ALL[..n])),
                Some(Resume::RollBack),
                "{n} steps"
            );
        }
        // Every prefix from it on continues with the next step.
        for n in pnr + 1..Step::ALL.len() {
            assert_eq!(
                resume(None, &steps(&Step::ALL[..n])),
                Some(Resume::Continue(Step::ALL[n])),
                "{n} steps"
            );
        }
        assert_eq!(
            resume(None, &steps(&Step::ALL)),
            Some(Resume::Continue(Step::Completed))
        );
        // Rollback records beside the steps change nothing.
        assert_eq!(
            resume(None, &steps(&[Step::Checked, Step::MaintenanceOn])),
            Some(Resume::RollBack)
        );
    }

    fn ready_facts() -> Facts {
        Facts {
            phase: Some(Phase::Copied),
            backlog: 3,
            oldest_change_s: Some(0.5),
            database_attached: true,
            formation_known: true,
            follow_stopped: Some("interrupted".into()),
            ..Default::default()
        }
    }

    #[test]
    fn readiness_checks() {
        let lag = Duration::from_secs(30);
        assert_eq!(readiness(&ready_facts(), lag), vec![]);
        let codes = |f: &Facts| readiness(f, lag).iter().map(|b| b.code).collect::<Vec<_>>();
        let mut f = ready_facts();
        f.phase = None;
        assert_eq!(codes(&f), ["no-migration"]);
        f.phase = Some(Phase::Copying);
        assert_eq!(codes(&f), ["copy-unfinished"]);
        let mut f = ready_facts();
        f.oldest_change_s = Some(31.0);
        assert_eq!(codes(&f), ["lagging"]);
        f.backlog = 0; // an empty log has no lag whatever the stale age says
        assert_eq!(codes(&f), Vec::<&str>::new());
        let mut f = ready_facts();
        f.follow_stopped = Some("schema change on the source: x".into());
        assert_eq!(codes(&f), ["follow-stopped"]);
        let mut f = ready_facts();
        f.schema_changes = vec!["public.t: column".into()];
        f.target_in_recovery = true;
        f.database_attached = false;
        f.source_mismatch = Some("m".into());
        f.previous_taken = Some("p".into());
        f.formation_known = false;
        assert_eq!(
            codes(&f),
            [
                "schema-changed",
                "target-read-only",
                "no-database-attachment",
                "source-mismatch",
                "previous-attachment-taken",
                "formation-unknown"
            ]
        );
    }

    fn p(t: &str, q: i64, size: &str) -> Process {
        Process {
            process_type: t.into(),
            quantity: q,
            size: size.into(),
        }
    }

    #[test]
    fn rollback_plans() {
        let saved = [
            p("web", 2, "Standard-1X"),
            p("worker", 1, "Standard-2X"),
            p("clock", 0, "Basic"),
        ];
        // Nothing changed yet (crash right after recording the attempt).
        assert_eq!(rollback_plan(&saved, false, &saved, false, None), vec![]);
        // Scaled down, maintenance on, previous attached.
        let down = [
            p("web", 0, "Standard-1X"),
            p("worker", 0, "Standard-2X"),
            p("clock", 0, "Basic"),
        ];
        assert_eq!(
            rollback_plan(&saved, false, &down, true, Some("att-1")),
            vec![
                RollbackAction::DetachPrevious("att-1".into()),
                RollbackAction::Scale(vec![
                    p("web", 2, "Standard-1X"),
                    p("worker", 1, "Standard-2X")
                ]),
                RollbackAction::MaintenanceOff,
            ]
        );
        // Maintenance was already on before: it stays on.
        assert_eq!(rollback_plan(&saved, true, &saved, true, None), vec![]);
        // A size changed (size names compare case-insensitively), a type vanished.
        let odd = [p("web", 2, "standard-1x"), p("worker", 1, "Performance-M")];
        assert_eq!(
            rollback_plan(&saved, false, &odd, false, None),
            vec![RollbackAction::Scale(vec![
                p("worker", 1, "Standard-2X"),
                p("clock", 0, "Basic")
            ])]
        );
    }

    fn dyno(t: &str, state: &str, v: Option<i64>) -> Dyno {
        Dyno {
            id: format!("{t}-{state}-{v:?}"),
            name: format!("{t}.1"),
            process_type: t.into(),
            state: state.into(),
            release: v.map(|version| ReleaseRef {
                id: String::new(),
                version,
            }),
        }
    }

    #[test]
    fn formation_readiness() {
        let saved = [p("web", 2, "Standard-1X"), p("worker", 0, "Standard-1X")];
        assert!(!formation_up(&saved, &[], 5));
        assert!(!formation_up(&saved, &[dyno("web", "up", Some(5))], 5));
        assert!(formation_up(
            &saved,
            &[dyno("web", "up", Some(5)), dyno("web", "up", Some(6))],
            5
        ));
        assert!(!formation_up(
            &saved,
            &[dyno("web", "up", Some(5)), dyno("web", "starting", Some(5))],
            5
        ));
        // An old-release dyno still running means the restart is not over.
        assert!(!formation_up(
            &saved,
            &[
                dyno("web", "up", Some(5)),
                dyno("web", "up", Some(5)),
                dyno("web", "up", Some(4))
            ],
            5
        ));
        // ... but a stopped one does not count.
        assert!(formation_up(
            &saved,
            &[
                dyno("web", "up", Some(5)),
                dyno("web", "up", Some(5)),
                dyno("web", "down", Some(4))
            ],
            5
        ));
        assert!(formation_up(&[], &[], 1));
    }

    #[test]
    fn app_urls_must_require_tls() {
        assert!(check_app_url("postgres://u:p@h:5432/d?sslmode=require").is_ok());
        assert!(check_app_url("postgres://u:p@h:5432/d?sslmode=verify-full").is_ok());
        for bad in [
            "postgres://u:p@h/d",
            "postgres://u:p@h/d?sslmode=prefer",
            "postgres://u:p@h/d?sslmode=disable",
        ] {
            let e = check_app_url(bad).expect_err(bad);
            assert_eq!(e.kind(), Kind::Usage);
            assert!(
                !e.message().contains(":p@"),
                "no password in {}",
                e.message()
            );
        }
    }
}
