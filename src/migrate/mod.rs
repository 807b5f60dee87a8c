//! `migrate`: the whole migration from a laptop. Plan (confirmed), provision, replicate on the
//! EC2 worker or in this process with live progress until caught up, cut over (confirmed
//! separately), archive the final backup, summarize.
//!
//! Every phase is recorded in the target's `heroku2rds.migrate_phases` and every phase is itself
//! resumable (provision converges, replicate resumes from its chunks, the cutover continues or
//! rolls back from its steps, the archive key is fixed once chosen), so `migrate` can be killed
//! at any moment and run again: it goes on from where it was and never repeats a finished
//! phase's side effects.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::archive;
use crate::aws::provision::read_master_password;
use crate::aws::s3 as s3archive;
use crate::aws::setup::{self, Resolved};
use crate::aws::spec::Names;
use crate::aws::Aws;
use crate::cancel::Cancel;
use crate::cutover;
use crate::error::{Cause, Error, Kind, Result};
use crate::heroku::app::App;
use crate::heroku::client::Client as Heroku;
use crate::pg::conn::ConnSpec;
use crate::pg::progress::{Event, Sink};
use crate::pg::replicate;
use crate::pg::status::{self, format_duration, Status};
use crate::pg::store::{self, PhaseRecord};

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
    /// What may be moved besides the app's DATABASE.
    pub consent: cutover::attachments::Consent,
    /// The pooler variable's URL (a secret).
    pub pooler_url: Option<String>,
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

mod archive_phase;
mod follower;
mod report;

use archive_phase::archive_phase;
use follower::{wait_until_caught_up, Follower};
use report::summary;
pub use report::{render, Summary};

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

/// Refuses at the start, not hours later at the cutover, when an attachment of the Heroku
/// database would stay on Heroku without the user's consent (see `cutover::attachments`).
async fn attachments_consented(heroku: &Heroku, o: &Options) -> Result<()> {
    let db = App::new(heroku, &o.app)
        .database(o.addon.as_deref())
        .await?;
    let all = heroku.addon_attachments(&db.addon.id).await?;
    let (_, blockers) = cutover::attachments::decide(&o.app, &all, &o.cutover.consent);
    if blockers.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = blockers
        .iter()
        .map(|b| format!("{} (fix: {})", b.message, b.fix))
        .collect();
    Err(Error::new(
        Kind::Blocked,
        format!(
            "app {} cannot be cut over as it is:\n  - {}",
            o.app,
            list.join("\n  - ")
        ),
    )
    .with_fix("fix the items above and re-run; nothing was changed"))
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
async fn connect_patiently(t: &ConnSpec, say: &dyn Sink) -> Result<tokio_postgres::Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match t.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if e.kind() == Kind::Other && Instant::now() < deadline => {
                say.info(
                    "target",
                    format!("waiting for the database to answer: {e:#}"),
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs (or resumes) the migration.
pub async fn run(
    heroku: &Heroku,
    o: &Options,
    prompts: Prompts<'_>,
    signals: &cutover::Signals,
    say: &dyn Sink,
) -> Result<Summary> {
    let spec = &o.resolved.spec;
    let source_url = o.resolved.source_url.as_deref().ok_or_else(|| {
        Error::usage("no source database URL").with_fix("set HEROKU2RDS_SOURCE_URL")
    })?;
    let source = ConnSpec::parse(source_url, "source")?;

    say.step(
        "plan",
        format!(
            "[1/6] plan: what migration {} needs in AWS ({})",
            spec.name, spec.region
        ),
    );
    let mut planned = setup::make_plan(&o.resolved).await?;
    let (aws, names) = (planned.aws.clone(), planned.names.clone());
    // Once the cutover is done, AWS is left as it is (a torn-down worker is not re-created).
    let mut phases = Vec::new();
    let mut existing = None;
    if let Some((host, port)) = planned.seen.db.ours().and_then(|d| d.endpoint.clone()) {
        let t = target(o, &aws, &names, &host, port).await?;
        let c = connect_patiently(&t.spec, say).await?;
        store::ensure_migrate_phases(&c).await?;
        phases = store::migrate_phases(&c).await?;
        existing = Some(t);
    }
    let cut = finished(&phases, "cutover").is_some();
    if !cut {
        attachments_consented(heroku, o).await?;
    }
    let target = match (cut, existing) {
        (true, Some(t)) => {
            say.info("plan", "the cutover is done: AWS is left as it is");
            t
        }
        _ => {
            // A worker to be launched gets a binary it can run, or nothing is created.
            setup::check_worker_binary(&o.resolved, &mut planned)?;
            say.emit(Event::Text(crate::aws::plan::render(&planned.plan)));
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
            say.info(
                "provision",
                format!(
                    "{created} resource(s) created or changed; archive bucket s3://{}",
                    done.bucket
                ),
            );
            if let Some(w) = &done.worker {
                say.info(
                    "provision",
                    format!("worker {w} runs replication under systemd"),
                );
            }
            let (host, port) = done
                .endpoint
                .clone()
                .ok_or_else(|| Error::other(format!("RDS reports no endpoint for {}", names.db)))?;
            let t = target(o, &aws, &names, &host, port).await?;
            let c = connect_patiently(&t.spec, say).await?;
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
        let probe = follower::BootstrapProbe {
            aws: &aws,
            bucket: &names.bucket,
        };
        let s = wait_until_caught_up(o, &target, &mut follower, Some(probe), &signals.cancel, say)
            .await?;
        store::finish_migrate_phase(
            &tgt,
            "replicate",
            &json!({"rows": s.rows, "bytes": s.bytes, "tables": s.tables.len()}),
        )
        .await?;
        say.info(
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
            consent: o.cutover.consent.clone(),
            pooler_url: o.cutover.pooler_url.clone(),
        };
        let mut ran = cutover::run(heroku, &copts, &mut *prompts.cutover, signals, say).await;
        if matches!(&ran, Err(e) if cutover::rolled_back_interrupted(e)) {
            say.info(
                "cutover",
                "an interrupted cutover was rolled back; switching afresh",
            );
            ran = cutover::run(heroku, &copts, &mut *prompts.cutover, signals, say).await;
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
        say.emit(Event::Text(cutover::render(&report)));
        detail
    };
    // The follower stopped by itself at the switch (it never applies the old database after
    // it); stopping it here only collects that.
    if let Some(f) = follower.take() {
        match f.stop().await {
            Err(e) if *e.cause() == Cause::Switched => {}
            other => other?,
        }
    }

    // The archive of the Heroku database as it was at the switch.
    let archived = match o.archive {
        None => None,
        Some(from) => {
            Some(archive_phase(heroku, o, &aws, &tgt, &source, from, signals, say).await?)
        }
    };

    say.step("summary", "[6/6] summary");
    let s = status::read(&target).await?;
    let phases = store::migrate_phases(&tgt).await?;
    Ok(summary(o, &names, &s, phases, &cutover_report, archived))
}
