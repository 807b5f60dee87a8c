//! `migrate`: the whole migration from a laptop. Plan (confirmed), provision, replicate on the
//! EC2 worker or in this process with live progress until caught up, cut over (confirmed
//! separately), archive the final backup, summarize.
//!
//! Every phase is recorded in the target's `heroku2rds.migrate_phases` and every phase is itself
//! resumable (provision converges, replicate resumes from its chunks, the cutover continues or
//! rolls back from its steps, the archive key is fixed once chosen), so `migrate` can be killed
//! at any moment and run again: it goes on from where it was and never repeats a finished
//! phase's side effects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::archive;
use crate::aws::provision::read_master_password;
use crate::aws::s3 as s3archive;
use crate::aws::setup::{self, Resolved};
use crate::aws::spec::Names;
use crate::aws::Aws;
use crate::cutover;
use crate::error::{Error, Kind, Result};
use crate::heroku::app::App;
use crate::heroku::client::Client as Heroku;
use crate::pg::conn::ConnSpec;
use crate::pg::replicate;
use crate::pg::status::{self, format_duration, Status};
use crate::pg::store::{self, PhaseRecord};
use crate::progress::{self, Progress};

/// Where replication runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// On the EC2 worker provision creates (under systemd; this process only watches).
    Ec2,
    /// In this process (the laptop must stay awake until the cutover).
    Local,
}

/// Where the archive comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFrom {
    /// A Heroku backup captured after the cutover.
    Backup,
    /// `pg_dump -Fc` of the Heroku database, run here.
    PgDump,
}

/// The cutover's settings.
#[derive(Debug, Clone)]
pub struct CutoverSettings {
    pub session_grace: Duration,
    pub max_lag: Duration,
    pub dyno_timeout: Duration,
    pub drain_timeout: Duration,
    pub release_timeout: Duration,
    pub verify_jobs: usize,
}

/// Everything `migrate` needs, validated.
pub struct Options {
    /// AWS settings, resolved (the source URL among them).
    pub resolved: Resolved,
    /// The Heroku app.
    pub app: String,
    /// Which Heroku Postgres add-on, when ambiguous.
    pub addon: Option<String>,
    /// Where replication runs.
    pub runner: Runner,
    /// Skip the confirmations.
    pub yes: bool,
    /// Archive after the cutover (None: no archive).
    pub archive: Option<ArchiveFrom>,
    /// The URL the app gets as DATABASE_URL (default: the RDS endpoint, TLS required).
    pub target_app_url: Option<String>,
    /// Longest wait for the RDS primary.
    pub provision_wait: Duration,
    /// Longest wait for the EC2 worker to report progress.
    pub worker_start_timeout: Duration,
    /// Longest wait for a Heroku backup.
    pub backup_timeout: Duration,
    /// Replication settings of the local runner.
    pub replicate: replicate::Options,
    pub cutover: CutoverSettings,
    /// How progress is shown.
    pub progress: progress::Mode,
    /// Poll interval of progress and waits.
    pub poll: Duration,
}

/// The questions `migrate` asks (answered on the terminal, or in advance by `--yes`).
pub struct Prompts<'a> {
    /// Confirms the AWS plan; an error cancels.
    pub plan: &'a mut (dyn FnMut() -> Result<()> + Send),
    /// Confirms the cutover (sees its step list); false cancels.
    pub cutover: cutover::Confirm<'a>,
}

/// The summary at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub app: String,
    pub migration: String,
    pub runner: Runner,
    /// The database the app now uses (no password).
    pub database: String,
    pub tables: usize,
    pub rows_copied: i64,
    pub bytes_copied: i64,
    pub changes_applied: i64,
    /// Phases with their times.
    pub phases: Vec<PhaseRecord>,
    /// Maintenance on -> off during the cutover, seconds.
    pub downtime_s: Option<f64>,
    /// No dyno running -> every dyno up on the new database, seconds.
    pub write_freeze_s: Option<f64>,
    /// The final verification's result.
    pub verification: String,
    /// The archive, when made.
    pub archive: Option<serde_json::Value>,
    /// What stays in the AWS account and what it costs by.
    pub kept: Vec<String>,
    /// What to do next.
    pub next_steps: Vec<String>,
}

/// The Heroku database's URL, read from the app: `HEROKU2RDS_PREVIOUS_DATABASE_URL` once a
/// cutover has moved `DATABASE_URL` (it names the same Heroku database), else the URL of the
/// database add-on's attachment. TLS is required when the URL says nothing.
pub async fn source_url(heroku: &Heroku, app: &str, addon: Option<&str>) -> Result<String> {
    let a = App::new(heroku, app);
    let vars = a.config_vars().await?;
    let previous = format!("{}_URL", cutover::PREVIOUS_ATTACHMENT);
    let url = match vars.get(&previous).cloned().flatten() {
        Some(u) => u,
        None => {
            let db = a.database(addon).await?;
            db.database_attachment
                .as_ref()
                .and_then(|att| vars.get(&format!("{}_URL", att.name)).cloned().flatten())
                .ok_or_else(|| {
                    Error::usage(format!("app {app} has no DATABASE_URL to migrate from"))
                        .with_fix("pass the Heroku database URL in HEROKU2RDS_SOURCE_URL")
                })?
        }
    };
    Ok(crate::heroku::app::with_tls_required(&url))
}

/// Step lines: `==> ...` for people, `{"event":"step",...}` for `--json`.
struct Say {
    json: bool,
}

impl Say {
    fn step(&self, phase: &str, message: &str) {
        if self.json {
            println!(
                "{}",
                json!({"event": "step", "phase": phase, "message": message})
            );
        } else {
            println!("\n==> {message}");
        }
    }

    fn line(&self, phase: &str, message: &str) {
        if self.json {
            println!(
                "{}",
                json!({"event": "info", "phase": phase, "message": message})
            );
        } else {
            println!("    {message}");
        }
    }
}

fn finished(phases: &[PhaseRecord], name: &str) -> Option<PhaseRecord> {
    phases
        .iter()
        .find(|p| p.phase == name && p.finished_at.is_some())
        .cloned()
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The primary as this machine reaches it, and the URL the app gets by default (the endpoint
/// itself, TLS required: the app does not use this machine's tunnel or CA file).
struct Target {
    spec: ConnSpec,
    app_url: String,
}

/// The master user's connection to the primary.
async fn target(o: &Options, aws: &Aws, names: &Names, host: &str, port: i32) -> Result<Target> {
    let reach = setup::reach(&o.resolved.reach).await?;
    let password = read_master_password(aws, names).await?;
    let db = &o.resolved.spec.db;
    let spec = reach.target(host, port, &db.master_username, &password, &db.db_name)?;
    let direct = setup::Reach {
        connect: None,
        ..reach
    }
    .target(host, port, &db.master_username, &password, &db.db_name)?
    .to_secret_url();
    let app_url = format!(
        "{}?sslmode=require",
        direct.split('?').next().unwrap_or_default()
    );
    Ok(Target { spec, app_url })
}

/// Connects; a new RDS endpoint can take a while to resolve, so connection failures (not
/// authentication or TLS refusals) are retried for a minute.
async fn connect_patiently(t: &ConnSpec, say: &Say) -> Result<tokio_postgres::Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match t.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if e.kind() == Kind::Other && Instant::now() < deadline => {
                say.line(
                    "target",
                    &format!("waiting for the database to answer: {e}"),
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A follower running in this process.
struct Follower {
    cancel: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<replicate::Outcome>>,
}

impl Follower {
    fn start(source: &ConnSpec, target: &ConnSpec, opts: &replicate::Options) -> Follower {
        let cancel = Arc::new(AtomicBool::new(false));
        let (s, t, o, c) = (
            source
                .clone()
                .with_application_name(replicate::SOURCE_APPLICATION_NAME),
            target.clone(),
            replicate::Options {
                until: replicate::Until::Forever,
                ..opts.clone()
            },
            cancel.clone(),
        );
        let task = tokio::spawn(async move { replicate::run(&s, &t, &o, c).await });
        Follower { cancel, task }
    }

    /// Stops it between batches and waits.
    async fn stop(self) -> Result<()> {
        self.cancel.store(true, Ordering::SeqCst);
        match self.task.await {
            Ok(r) => r.map(|_| ()),
            Err(e) => Err(Error::other(format!("the replication task failed: {e}"))),
        }
    }
}

/// Caught up enough to cut over: every table copied and indexed, the change log drained by a
/// follower that reported recently.
fn ready(s: &Status) -> bool {
    s.phase == "copied"
        && s.caught_up
        && s.follow_updated_s.is_some_and(|t| t < 30.0)
        && s.stopped_reason.is_none()
}

/// Shows progress until the target is ready for the cutover.
async fn wait_until_caught_up(
    o: &Options,
    target: &ConnSpec,
    follower: &mut Option<Follower>,
    cancel: &AtomicBool,
) -> Result<Status> {
    let mut p = Progress::new(o.progress);
    let started = Instant::now();
    loop {
        if cancel.load(Ordering::SeqCst) {
            if let Some(f) = follower.take() {
                f.stop().await?;
            }
            return Err(Error::other("interrupted while replicating")
                .with_fix("run `heroku2rds migrate` again: it resumes where it stopped"));
        }
        if let Some(f) = follower.as_ref() {
            if f.task.is_finished() {
                let Some(f) = follower.take() else {
                    unreachable!("checked above")
                };
                return match f.task.await {
                    Ok(Ok(_)) => Err(Error::other("replication stopped before catching up")
                        .with_fix("run `heroku2rds migrate` again: it resumes where it stopped")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(Error::other(format!("the replication task failed: {e}"))),
                };
            }
        }
        let st = match status::read(target).await {
            Ok(s) => Some(s),
            // No migration on the target yet: the runner has not started it.
            Err(e) if e.kind() == Kind::Usage => None,
            Err(e) => return Err(e),
        };
        match st {
            Some(s) => {
                if ready(&s) {
                    p.finish(&s);
                    return Ok(s);
                }
                if let Some(why) = &s.stopped_reason {
                    if s.runner.is_none() {
                        return Err(Error::other(format!("replication stopped: {why}"))
                            .with_fix("see `heroku2rds status`; fix the cause and run `heroku2rds migrate` again"));
                    }
                }
                p.update(&s);
            }
            None => {
                if o.runner == Runner::Ec2 && started.elapsed() > o.worker_start_timeout {
                    return Err(Error::other(format!(
                        "the EC2 worker has not started replicating after {}",
                        format_duration(o.worker_start_timeout.as_secs_f64())
                    ))
                    .with_fix("read the worker's console output (aws ec2 get-console-output) or its journal (journalctl -u heroku2rds-worker over SSH), then run migrate again"));
                }
                p.waiting(match o.runner {
                    Runner::Ec2 => "waiting for the EC2 worker to start replicating (it installs the PostgreSQL client first)",
                    Runner::Local => "starting replication",
                });
            }
        }
        tokio::time::sleep(o.poll).await;
    }
}

/// A future that resolves once `flag` is set.
async fn flagged(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs (or resumes) the migration.
pub async fn run(
    heroku: &Heroku,
    o: &Options,
    prompts: Prompts<'_>,
    signals: &cutover::Signals,
) -> Result<Summary> {
    let say = Say {
        json: o.progress == progress::Mode::Json,
    };
    let spec = &o.resolved.spec;
    let source_url = o.resolved.source_url.as_deref().ok_or_else(|| {
        Error::usage("no source database URL").with_fix("set HEROKU2RDS_SOURCE_URL")
    })?;
    let source = ConnSpec::parse(source_url, "source")?;

    say.step(
        "plan",
        &format!(
            "[1/6] plan: what migration {} needs in AWS ({})",
            spec.name, spec.region
        ),
    );
    let planned = setup::make_plan(&o.resolved).await?;
    let (aws, names) = (planned.aws.clone(), planned.names.clone());
    // Once the cutover is done, AWS is left as it is (a torn-down worker is not re-created).
    let mut phases = Vec::new();
    let mut existing = None;
    if let Some((host, port)) = planned.seen.db.ours().and_then(|d| d.endpoint.clone()) {
        let t = target(o, &aws, &names, &host, port).await?;
        let c = connect_patiently(&t.spec, &say).await?;
        store::ensure_migrate_phases(&c).await?;
        phases = store::migrate_phases(&c).await?;
        existing = Some(t);
    }
    let cut = finished(&phases, "cutover").is_some();
    let target = match (cut, existing) {
        (true, Some(t)) => {
            say.line("plan", "the cutover is done: AWS is left as it is");
            t
        }
        _ => {
            if !say.json {
                print!("{}", crate::aws::plan::render(&planned.plan));
            }
            if !planned.plan.converged() && !o.yes {
                (prompts.plan)()?;
            }
            say.step(
                "provision",
                "[2/6] provision: creating what is missing (re-runs find what exists)",
            );
            let t0 = unix_now_f64();
            let done = setup::provision(&o.resolved, planned, o.provision_wait).await?;
            let created = done.steps.iter().filter(|d| d.outcome != "exists").count();
            say.line(
                "provision",
                &format!(
                    "{created} resource(s) created or changed; archive bucket s3://{}",
                    done.bucket
                ),
            );
            if let Some(w) = &done.worker {
                say.line(
                    "provision",
                    &format!("worker {w} runs replication under systemd"),
                );
            }
            let (host, port) = done
                .endpoint
                .clone()
                .ok_or_else(|| Error::other(format!("RDS reports no endpoint for {}", names.db)))?;
            let t = target(o, &aws, &names, &host, port).await?;
            let c = connect_patiently(&t.spec, &say).await?;
            store::ensure_migrate_phases(&c).await?;
            store::start_migrate_phase(&c, "provision", Some(t0), &json!({"created": created}))
                .await?;
            store::finish_migrate_phase(&c, "provision", &json!({})).await?;
            t
        }
    };
    let Target {
        spec: target,
        app_url: default_app_url,
    } = target;
    let tgt = target.connect().await?;

    // Replicate until caught up (again, when a previous run stopped before the cutover: the
    // change log grew meanwhile).
    let mut follower = None;
    if !cut {
        say.step(
            "replicate",
            &match o.runner {
                Runner::Ec2 => "[3/6] replicate: on the EC2 worker; progress is read from the target".to_string(),
                Runner::Local => "[3/6] replicate: in this process (capture, parallel copy, then following changes)".to_string(),
            },
        );
        store::start_migrate_phase(&tgt, "replicate", None, &json!({"runner": o.runner})).await?;
        if o.runner == Runner::Local {
            follower = Some(Follower::start(&source, &target, &o.replicate));
        }
        let s = wait_until_caught_up(o, &target, &mut follower, &signals.cancel).await?;
        store::finish_migrate_phase(
            &tgt,
            "replicate",
            &json!({"rows": s.rows, "bytes": s.bytes, "tables": s.tables.len()}),
        )
        .await?;
        say.line(
            "replicate",
            "caught up: every table copied, changes applied as they happen",
        );
    }

    // The cutover: its own records make it resumable; a run killed before the point of no
    // return is rolled back, then switched afresh.
    let cutover_report = if let Some(p) = finished(&store::migrate_phases(&tgt).await?, "cutover") {
        p.detail
    } else {
        say.step("cutover", "[4/6] cutover: maintenance on, dynos stopped, final sync and verification, DATABASE_URL switched, dynos back");
        store::start_migrate_phase(&tgt, "cutover", None, &json!({})).await?;
        let app_url = o.target_app_url.clone().unwrap_or(default_app_url);
        cutover::check_app_url(&app_url)?;
        let copts = cutover::Options {
            app: o.app.clone(),
            addon: o.addon.clone(),
            source: Some(source.clone()),
            target: target.clone(),
            app_url,
            dry_run: false,
            session_grace: o.cutover.session_grace,
            max_lag: o.cutover.max_lag,
            dyno_timeout: o.cutover.dyno_timeout,
            drain_timeout: o.cutover.drain_timeout,
            release_timeout: o.cutover.release_timeout,
            jobs: o.cutover.verify_jobs,
            poll: Duration::from_millis(500),
        };
        let mut ran = cutover::run(heroku, &copts, &mut *prompts.cutover, signals).await;
        if matches!(&ran, Err(e) if cutover::rolled_back_interrupted(e)) {
            say.line(
                "cutover",
                "an interrupted cutover was rolled back; switching afresh",
            );
            ran = cutover::run(heroku, &copts, &mut *prompts.cutover, signals).await;
        }
        let report = match ran {
            Ok(r) => r,
            Err(e) => {
                if let Some(f) = follower.take() {
                    let _ = f.stop().await;
                }
                return Err(e);
            }
        };
        let detail = json!({
            "outcome": report.outcome,
            "downtime_s": report.downtime_s,
            "write_freeze_s": report.write_freeze_s,
            "release": report.release,
            "database": report.database,
            "steps": report.steps,
        });
        store::finish_migrate_phase(&tgt, "cutover", &detail).await?;
        if !say.json {
            print!("{}", cutover::render(&report));
        }
        detail
    };
    if let Some(f) = follower.take() {
        f.stop().await?;
    }

    // The archive of the Heroku database as it was at the switch.
    let archived = match o.archive {
        None => None,
        Some(from) => {
            Some(archive_phase(heroku, o, &aws, &tgt, &source, from, signals, &say).await?)
        }
    };

    say.step("summary", "[6/6] summary");
    let s = status::read(&target).await?;
    let phases = store::migrate_phases(&tgt).await?;
    Ok(summary(o, &names, &s, phases, &cutover_report, archived))
}

#[allow(clippy::too_many_arguments)]
async fn archive_phase(
    heroku: &Heroku,
    o: &Options,
    aws: &Aws,
    tgt: &tokio_postgres::Client,
    source: &ConnSpec,
    from: ArchiveFrom,
    signals: &cutover::Signals,
    say: &Say,
) -> Result<serde_json::Value> {
    const PHASE: &str = "archive";
    if let Some(p) = finished(&store::migrate_phases(tgt).await?, PHASE) {
        return Ok(p.detail);
    }
    say.step(
        PHASE,
        "[5/6] archive: the final Heroku backup, streamed into the S3 bucket",
    );
    // The key's date is fixed once: a re-run finds (or overwrites) the same object.
    let recorded = store::migrate_phases(tgt)
        .await?
        .into_iter()
        .find(|p| p.phase == PHASE)
        .map(|p| p.detail)
        .unwrap_or_default();
    let stamp = recorded["stamp"].as_u64().unwrap_or_else(archive::unix_now);
    store::start_migrate_phase(tgt, PHASE, None, &json!({"stamp": stamp})).await?;
    let spec = &o.resolved.spec;
    let account = aws.account().await?;
    let bucket = crate::aws::spec::bucket_name(&spec.name, &account, &spec.region);
    let aborted = s3archive::abort_unfinished(aws, &bucket, "archive/").await?;
    if aborted > 0 {
        say.line(
            PHASE,
            &format!("aborted {aborted} unfinished upload(s) of an interrupted run"),
        );
    }
    let (via, label) = match from {
        ArchiveFrom::Backup => {
            let label = match recorded["backup"].as_str() {
                Some(l) => l.to_string(),
                None => {
                    let l = archive::capture(heroku, &o.app, o.addon.as_deref()).await?;
                    store::start_migrate_phase(tgt, PHASE, None, &json!({"backup": l})).await?;
                    l
                }
            };
            (archive::Via::Backup(Some(label.clone())), label)
        }
        ArchiveFrom::PgDump => (archive::Via::PgDump(Some(source.clone())), "pg_dump".into()),
    };
    let key = archive::object_key(&o.app, &label, stamp);
    let done = match s3archive::find_complete(aws, &bucket, &key).await? {
        Some(stored) => {
            say.line(PHASE, &format!("s3://{bucket}/{key} is already complete"));
            json!({"bucket": stored.bucket, "key": stored.key, "bytes": stored.bytes, "sha256": stored.sha256})
        }
        None => {
            let aopts = archive::Options {
                app: o.app.clone(),
                name: spec.name.clone(),
                region: spec.region.clone(),
                addon: o.addon.clone(),
                via,
                poll: o.poll,
                backup_timeout: o.backup_timeout,
                stamp: Some(stamp),
            };
            let a =
                archive::run(aws, Some(heroku), &aopts, flagged(signals.cancel.clone())).await?;
            json!({"bucket": a.bucket, "key": a.key, "bytes": a.bytes, "sha256": a.sha256, "source": a.source})
        }
    };
    store::finish_migrate_phase(tgt, PHASE, &done).await?;
    let done = finished(&store::migrate_phases(tgt).await?, PHASE)
        .map(|p| p.detail)
        .unwrap_or(done);
    say.line(
        PHASE,
        &format!(
            "s3://{}/{} ({} bytes, sha256 {})",
            done["bucket"].as_str().unwrap_or_default(),
            done["key"].as_str().unwrap_or_default(),
            done["bytes"],
            done["sha256"].as_str().unwrap_or_default()
        ),
    );
    Ok(done)
}

fn summary(
    o: &Options,
    names: &Names,
    s: &Status,
    phases: Vec<PhaseRecord>,
    cut: &serde_json::Value,
    archive: Option<serde_json::Value>,
) -> Summary {
    let spec = &o.resolved.spec;
    let mut kept = vec![format!(
        "RDS primary {} ({}, {} GiB gp3, {}-day backups): instance hours, storage, backups beyond the database's size",
        names.db, spec.db.instance_class, spec.db.storage_gb, spec.db.backup_retention_days
    )];
    if let Some(rr) = &spec.replica_region {
        kept.push(format!(
            "cross-region read replica {} in {rr} ({}): instance hours, storage, cross-region transfer",
            names.replica, spec.db.instance_class
        ));
    }
    kept.push(format!(
        "S3 bucket {} (the archive): storage per GB-month",
        names.bucket
    ));
    kept.push(format!(
        "secret {} (the master password): per secret-month",
        names.secret
    ));
    if o.runner == Runner::Ec2 {
        if let Some(w) = &spec.worker {
            kept.push(format!(
                "EC2 worker ({}, still following the old database): instance hours, disk; remove it with teardown",
                w.instance_type
            ));
        }
    }
    let region = &spec.region;
    let mut next = vec![
        format!("watch the app: heroku logs --tail -a {}", o.app),
        format!(
            "remove the worker side (the database, replica and bucket stay): heroku2rds teardown --name {} --region {region}",
            spec.name
        ),
        "remove the capture triggers from the Heroku database: heroku2rds clean (with HEROKU2RDS_SOURCE_URL set to HEROKU2RDS_PREVIOUS_DATABASE_URL)".to_string(),
        format!(
            "the Heroku database stays attached as {} (your way back) until you destroy its add-on: heroku addons -a {}",
            cutover::PREVIOUS_ATTACHMENT,
            o.app
        ),
    ];
    if spec.replica_region.is_some() {
        next.push(
            "the replica is an RDS read replica: promote it only if you mean to move the primary"
                .into(),
        );
    }
    Summary {
        app: o.app.clone(),
        migration: spec.name.clone(),
        runner: o.runner,
        database: cut["database"].as_str().unwrap_or_default().to_string(),
        tables: s.tables.len(),
        rows_copied: s.rows,
        bytes_copied: s.bytes,
        changes_applied: s.applied_changes,
        phases,
        downtime_s: cut["downtime_s"].as_f64(),
        write_freeze_s: cut["write_freeze_s"].as_f64(),
        verification: "no differences: the cutover's final verification compared every table while writes were stopped (it rolls back on any difference)".into(),
        archive,
        kept,
        next_steps: next,
    }
}

/// Renders the summary for people.
pub fn render(s: &Summary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "migration {} of app {}: done", s.migration, s.app);
    let _ = writeln!(o, "  database now: {}", s.database);
    let _ = writeln!(
        o,
        "  data: {} table(s), {} rows ({:.1} MB) copied, {} change(s) applied while following",
        s.tables,
        s.rows_copied,
        s.bytes_copied as f64 / 1e6,
        s.changes_applied
    );
    let _ = writeln!(o, "  time per phase:");
    for p in &s.phases {
        let took = p.finished_at.map_or("unfinished".to_string(), |f| {
            format_duration(f - p.started_at)
        });
        let _ = writeln!(o, "    {:<10} {took}", p.phase);
    }
    let _ = writeln!(
        o,
        "  downtime: {} with maintenance on; writes stopped for {}",
        s.downtime_s.map_or("-".into(), |d| format!("{d:.1}s")),
        s.write_freeze_s.map_or("-".into(), |d| format!("{d:.1}s"))
    );
    let _ = writeln!(o, "  verification: {}", s.verification);
    if let Some(a) = &s.archive {
        let _ = writeln!(
            o,
            "  archive: s3://{}/{} ({} bytes, sha256 {})",
            a["bucket"].as_str().unwrap_or_default(),
            a["key"].as_str().unwrap_or_default(),
            a["bytes"],
            a["sha256"].as_str().unwrap_or_default()
        );
    }
    let _ = writeln!(o, "  kept in AWS (and what they cost by):");
    for k in &s.kept {
        let _ = writeln!(o, "    - {k}");
    }
    let _ = writeln!(o, "  next steps:");
    for n in &s.next_steps {
        let _ = writeln!(o, "    - {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: &str, caught_up: bool, updated: Option<f64>) -> Status {
        Status {
            source: "h:5432/d".into(),
            phase: phase.into(),
            runner: Some("heroku2rds replicate on w pid 1".into()),
            chunks_done: 1,
            chunks_total: 1,
            rows: 10,
            bytes: 100,
            copy_seconds: 1.0,
            bytes_per_second: 100.0,
            rows_per_second: 10.0,
            eta_seconds: None,
            schema_items_done: 1,
            backlog: Some(0),
            oldest_change_s: None,
            caught_up,
            applied_changes: 5,
            apply_rate: None,
            stopped_reason: None,
            follow_updated_s: updated,
            tables: vec![],
        }
    }

    #[test]
    fn ready_only_when_copied_caught_up_and_recent() {
        assert!(ready(&status("copied", true, Some(1.0))));
        assert!(!ready(&status("copying", true, Some(1.0))), "still copying");
        assert!(!ready(&status("copied", false, Some(1.0))), "backlog");
        assert!(
            !ready(&status("copied", true, Some(120.0))),
            "stale follower"
        );
        assert!(!ready(&status("copied", true, None)), "never followed");
        let mut stopped = status("copied", true, Some(1.0));
        stopped.stopped_reason = Some("interrupted".into());
        assert!(!ready(&stopped), "stopped follower");
    }

    #[test]
    fn the_summary_says_times_downtime_archive_and_what_is_kept() {
        let s = Summary {
            app: "acme".into(),
            migration: "acme".into(),
            runner: Runner::Ec2,
            database: "postgresql://app@db.example.com:5432/app".into(),
            tables: 3,
            rows_copied: 1000,
            bytes_copied: 2_000_000,
            changes_applied: 42,
            phases: vec![
                PhaseRecord {
                    phase: "provision".into(),
                    started_at: 100.0,
                    finished_at: Some(165.0),
                    detail: json!({}),
                },
                PhaseRecord {
                    phase: "archive".into(),
                    started_at: 200.0,
                    finished_at: None,
                    detail: json!({}),
                },
            ],
            downtime_s: Some(4.25),
            write_freeze_s: Some(3.5),
            verification: "no differences".into(),
            archive: Some(
                json!({"bucket": "b", "key": "archive/k.dump", "bytes": 7, "sha256": "ab"}),
            ),
            kept: vec!["RDS primary x".into()],
            next_steps: vec!["heroku2rds teardown".into()],
        };
        let text = render(&s);
        for want in [
            "migration acme of app acme: done",
            "3 table(s), 1000 rows (2.0 MB) copied, 42 change(s) applied",
            "provision  1m 05s",
            "archive    unfinished",
            "downtime: 4.2s with maintenance on; writes stopped for 3.5s",
            "s3://b/archive/k.dump (7 bytes, sha256 ab)",
            "- RDS primary x",
            "- heroku2rds teardown",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}
