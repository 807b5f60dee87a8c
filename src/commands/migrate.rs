//! `migrate`: the whole migration, resumable. Resolves the settings, asks the questions, runs
//! [`crate::migrate::run`] and prints its summary.

use std::time::Duration;

use super::{heroku_config, jobs_zero};
use crate::cli::{config, prompt, render, resolve, signals, ArchiveArg, MigrateArgs, RunnerArg};
use crate::cutover;
use crate::error::{Error, Result};
use crate::heroku::client::Client;
use crate::migrate;
use crate::pg::replicate;

pub async fn run(a: MigrateArgs) -> Result<u8> {
    let file = config::load(a.aws.config.as_deref())?;
    let app = a.app.clone().or(file.app.clone()).ok_or_else(|| {
        Error::usage("no Heroku app")
            .with_fix("pass --app APP (or run `heroku2rds init --app APP`)")
    })?;
    let runner = match a.runner {
        RunnerArg::Ec2 => migrate::Runner::Ec2,
        RunnerArg::Local => migrate::Runner::Local,
    };
    let mut aws = a.aws.clone();
    if runner == migrate::Runner::Ec2 && aws.no_worker {
        return Err(
            Error::usage("--no-worker leaves nothing to run replication on")
                .with_fix("pass --runner local to replicate from this machine instead"),
        );
    }
    if a.aws.jobs == Some(0) {
        return Err(jobs_zero());
    }
    aws.no_worker = runner == migrate::Runner::Local;
    if aws.name.is_none() && file.name.is_none() {
        aws.name = Some(app.clone());
    }
    if let Some(u) = &a.target_app_url {
        cutover::check_app_url(u)?;
    }
    if let Some(u) = &a.cutover.pooler_url {
        cutover::check_app_url(u)?;
    }
    let client = Client::new(heroku_config()?)?;
    // Asked even when HEROKU2RDS_SOURCE_URL is given: a token, app or database problem must stop
    // the run here, before anything is created in AWS, not hours later at the cutover.
    let app_source = migrate::source_url(&client, &app, a.addon.as_deref()).await?;
    if aws.source.is_none() {
        aws.source = Some(app_source);
    }
    let resolved = resolve::resolve(&aws).await?;
    let secs = Duration::from_secs;
    let opts = migrate::Options {
        replicate: replicate::Options {
            jobs: a.aws.jobs.unwrap_or(0),
            keyless: a.aws.keyless.into(),
            chunk_bytes: 64 << 20,
            until: replicate::Until::Forever,
            lock_timeout: secs(1),
            capture_max_wait: secs(900),
            batch: 5000,
            verify_rate: crate::pg::verify::ranges::DEFAULT_RATE,
        },
        resolved,
        app: app.clone(),
        addon: a.addon.clone(),
        runner,
        yes: a.yes,
        archive: match a.archive {
            ArchiveArg::Backup => Some(migrate::ArchiveFrom::Backup),
            ArchiveArg::PgDump => Some(migrate::ArchiveFrom::PgDump),
            ArchiveArg::None => None,
        },
        target_app_url: a.target_app_url.clone(),
        provision_wait: secs(a.wait_minutes.max(1) * 60),
        worker_start_timeout: secs(a.worker_start_minutes.max(1) * 60),
        backup_timeout: secs(a.backup_wait_minutes.max(1) * 60),
        cutover: migrate::CutoverSettings {
            session_grace: secs(a.cutover.session_grace_s),
            max_lag: secs(a.cutover.max_lag_s),
            dyno_timeout: secs(a.cutover.dyno_timeout_s),
            drain_timeout: secs(a.cutover.drain_timeout_s),
            release_timeout: secs(a.cutover.release_timeout_s),
            verify_jobs: 2,
            consent: a.cutover.consent(),
            pooler_url: a.cutover.pooler_url.clone(),
        },
        poll: secs(1),
    };
    let yes = a.yes;
    let mut plan_prompt = move || -> Result<()> {
        if yes {
            Ok(())
        } else {
            prompt::confirm("Create and change these AWS resources?", "migrate")
        }
    };
    let app_name = app.clone();
    let mut cutover_prompt = move |plan: &[String]| -> Result<bool> {
        if yes {
            Ok(true)
        } else {
            prompt::confirm_cutover(&app_name, plan)
        }
    };
    let prompts = migrate::Prompts {
        plan: &mut plan_prompt,
        cutover: &mut cutover_prompt,
    };
    let sink = render::sink(render::Mode::detect(a.json));
    let summary = migrate::run(
        &client,
        &opts,
        prompts,
        &signals::migrate_signals(),
        sink.as_ref(),
    )
    .await?;
    drop(sink);
    if a.json {
        let mut v = serde_json::to_value(&summary)
            .map_err(|e| Error::other("rendering JSON").with_source(e))?;
        v["event"] = "summary".into();
        println!("{v}");
    } else {
        print!("{}", migrate::render(&summary));
    }
    Ok(0)
}
