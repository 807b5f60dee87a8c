//! The heroku2rds binary: parse arguments, set up logging, run, print the error once, exit.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use heroku2rds::aws::plan;
use heroku2rds::cli::{Cli, Command};
use heroku2rds::error::{Error, Kind, Result};
use heroku2rds::heroku::client as heroku_client;
use heroku2rds::pg::conn::{error_chain, ConnSpec};
use heroku2rds::pg::{preflight, replicate, sequences, verify};
use heroku2rds::worker::Job;
use heroku2rds::{archive, clean, cutover, migrate, progress, provisioning, status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    warn_about_passwords_in_arguments(std::env::args().skip(1));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(5);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            if let Some(fix) = e.fix() {
                eprintln!("  fix: {fix}");
            }
            ExitCode::from(e.kind().exit_code() as u8)
        }
    }
}

/// Arguments are visible to every user of the machine (`ps`): warn when one carries a password.
fn warn_about_passwords_in_arguments(args: impl Iterator<Item = String>) {
    let mut flag = String::new();
    for arg in args {
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), v.to_string()),
            _ if arg.starts_with("--") => {
                flag = arg;
                continue;
            }
            _ => (std::mem::take(&mut flag), arg),
        };
        let has_password = url::Url::parse(&value)
            .map(|u| u.password().is_some_and(|p| !p.is_empty()))
            .unwrap_or(false);
        if has_password && !name.is_empty() {
            let var = match name.as_str() {
                "--source" => "HEROKU2RDS_SOURCE_URL",
                "--target" => "HEROKU2RDS_TARGET_URL",
                "--target-app-url" => "HEROKU2RDS_TARGET_APP_URL",
                _ => "the matching environment variable",
            };
            tracing::warn!(
                "{name} carries a password on the command line, where every user of this machine can \
                 read it (ps); pass it in {var} instead"
            );
        }
    }
}

fn init_tracing(filter: &str) {
    // tokio-postgres logs query parameters at debug level: keep it at warn whatever is asked.
    let filter = format!("{filter},tokio_postgres=warn,rustls=warn");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn render_error(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {}", error_chain(src)),
        None => e.to_string(),
    }
}

fn sigterm() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
}

/// Waits for the next Ctrl-C or SIGTERM (Ctrl-C only when SIGTERM cannot be watched).
async fn next_signal(term: &mut Option<tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = t.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Calls `each` on every Ctrl-C or SIGTERM, from a background task that lives as long as the
/// process.
fn on_signals(mut each: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        let mut term = sigterm();
        loop {
            next_signal(&mut term).await;
            each();
        }
    });
}

/// Sets the returned flag on SIGINT/SIGTERM; a second signal exits at once.
fn cancellation() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    on_signals(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!(
            "interrupted: stopping cleanly after the work in flight (press Ctrl-C again to exit now)"
        );
    });
    flag
}

/// Resolves on the first Ctrl-C or SIGTERM (the caller aborts what it was doing).
async fn interrupted() {
    next_signal(&mut sigterm()).await;
    eprintln!("interrupted: aborting");
}

/// Cutover's signal handling: Ctrl-C/SIGTERM set the flag (before the point of no return that
/// rolls back); the process never exits on a signal, so a switch past the point of no return
/// always runs to completion.
fn cutover_signals() -> cutover::Signals {
    let signals = cutover::Signals::default();
    let s = signals.clone();
    on_signals(move || {
        s.cancel.store(true, Ordering::SeqCst);
        if s.past_point_of_no_return.load(Ordering::SeqCst) {
            eprintln!("interrupted after the point of no return: the switch runs to completion");
        } else {
            eprintln!("interrupted: rolling the cutover back");
        }
    });
    signals
}

/// The Heroku client configuration from the environment (the only place it is read).
fn heroku_config() -> Result<heroku_client::Config> {
    let key = std::env::var("HEROKU_API_KEY").ok();
    let netrc =
        std::env::var_os("HOME").and_then(|h| heroku_client::read_netrc(std::path::Path::new(&h)));
    let (token, source) = heroku_client::resolve_token(key.as_deref(), netrc.as_deref())?;
    heroku_client::Config::new(
        std::env::var("HEROKU_API_URL").ok().as_deref(),
        std::env::var("HEROKU_DATA_API_URL").ok().as_deref(),
        token,
        source,
    )
}

/// `--jobs 0`, refused by every command that copies.
fn jobs_zero() -> Error {
    Error::usage("--jobs must be at least 1").with_fix(
        "leave --jobs out to size it from the cores and the source's free connections, or give 1 or more",
    )
}

/// Prints `prompt` on the terminal and returns the answer; without a terminal, refuses with
/// "`needs` and there is no terminal to ask on".
fn ask(needs: &str, prompt: &str) -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(
            Error::usage(format!("{needs} and there is no terminal to ask on"))
                .with_fix("run it in a terminal, or pass --yes to confirm in advance"),
        );
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::other("reading the answer").with_source(e))?;
    Ok(answer.trim().to_string())
}

/// Shows the cutover plan and asks for the app's name.
fn confirm_on_terminal(app: &str, plan: &[String]) -> Result<bool> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprintln!("heroku2rds will switch app {app}:");
        for (i, line) in plan.iter().enumerate() {
            eprintln!("  {:>2}. {line}", i);
        }
    }
    let answer = ask(
        "cutover needs confirmation",
        &format!("type the app name ({app}) to proceed: "),
    )?;
    Ok(answer == app)
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::other(format!("rendering JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Asks yes/no on a terminal; refuses without one.
fn confirm(question: &str, command: &str) -> Result<()> {
    let answer = ask(
        &format!("{command} changes your AWS account"),
        &format!("{question} [y/N] "),
    )?;
    if matches!(answer.as_str(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{command} cancelled; nothing was changed"
        )))
    }
}

/// Asks for the migration's name to be typed before deleting the database.
fn confirm_typed(name: &str) -> Result<()> {
    let answer = ask(
        "teardown --delete-target deletes the RDS database",
        &format!(
            "This deletes the RDS database of migration {name} (a final snapshot is kept) and the \
             archive bucket.\nType the migration's name to confirm: "
        ),
    )?;
    if answer == name {
        Ok(())
    } else {
        Err(Error::usage(
            "teardown cancelled (the name did not match); nothing was changed",
        ))
    }
}

async fn run_replicate(source: ConnSpec, target: ConnSpec, opts: replicate::Options) -> Result<u8> {
    let until = opts.until;
    let source = source.with_application_name(replicate::SOURCE_APPLICATION_NAME);
    let outcome = replicate::run(&source, &target, &opts, cancellation()).await?;
    if outcome.applied.changes > 0 || until != replicate::Until::Copied {
        println!(
            "applied {} change(s): {} key(s) rewritten, {} truncate(s){}",
            outcome.applied.changes,
            outcome.applied.keys,
            outcome.applied.truncates,
            if outcome.interrupted {
                "; stopped by a signal, re-run to continue"
            } else {
                "; caught up"
            }
        );
    }
    if outcome.already_done {
        println!("nothing to do: the target already holds a complete copy (run `heroku2rds verify` to compare)");
    } else if outcome.copied.chunks > 0 {
        println!(
            "copied {} rows ({:.1} MB) in {} chunks with {} workers; the target is complete",
            outcome.copied.rows,
            outcome.copied.bytes as f64 / 1e6,
            outcome.copied.chunks,
            outcome.jobs
        );
    }
    Ok(0)
}

/// `migrate`'s signal handling: Ctrl-C/SIGTERM stop replication cleanly, roll back a cutover
/// before its point of no return, and never interrupt a switch past it.
fn migrate_signals() -> cutover::Signals {
    let signals = cutover::Signals::default();
    let s = signals.clone();
    on_signals(move || {
        s.cancel.store(true, Ordering::SeqCst);
        if s.past_point_of_no_return.load(Ordering::SeqCst) {
            eprintln!(
                "interrupted after the cutover's point of no return: the switch runs to completion"
            );
        } else {
            eprintln!("interrupted: stopping cleanly (a cutover in progress rolls back); run migrate again to resume");
        }
    });
    signals
}

async fn run_migrate(a: heroku2rds::cli::MigrateArgs) -> Result<u8> {
    use heroku2rds::cli::{ArchiveArg, RunnerArg};
    use std::io::IsTerminal;
    let file = heroku2rds::config::load(a.aws.config.as_deref())?;
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
    let client = heroku_client::Client::new(heroku_config()?)?;
    // Asked even when HEROKU2RDS_SOURCE_URL is given: a token, app or database problem must stop
    // the run here, before anything is created in AWS, not hours later at the cutover.
    let app_source = migrate::source_url(&client, &app, a.addon.as_deref()).await?;
    if aws.source.is_none() {
        aws.source = Some(app_source);
    }
    let resolved = provisioning::resolve(&aws).await?;
    let secs = std::time::Duration::from_secs;
    let mode = if a.json {
        progress::Mode::Json
    } else if std::io::stdout().is_terminal() {
        progress::Mode::Tty
    } else {
        progress::Mode::Plain
    };
    let opts = migrate::Options {
        replicate: replicate::Options {
            jobs: a.aws.jobs.unwrap_or(0),
            keyless: a.aws.keyless,
            chunk_bytes: 64 << 20,
            until: replicate::Until::Forever,
            lock_timeout: std::time::Duration::from_secs(1),
            capture_max_wait: secs(900),
            batch: 5000,
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
        },
        progress: mode,
        poll: std::time::Duration::from_secs(1),
    };
    let yes = a.yes;
    let mut plan_prompt = move || -> Result<()> {
        if yes {
            Ok(())
        } else {
            confirm("Create and change these AWS resources?", "migrate")
        }
    };
    let app_name = app.clone();
    let mut cutover_prompt = move |plan: &[String]| -> Result<bool> {
        if yes {
            Ok(true)
        } else {
            confirm_on_terminal(&app_name, plan)
        }
    };
    let prompts = migrate::Prompts {
        plan: &mut plan_prompt,
        cutover: &mut cutover_prompt,
    };
    let summary = migrate::run(&client, &opts, prompts, &migrate_signals()).await?;
    if a.json {
        let mut v = serde_json::to_value(&summary)
            .map_err(|e| Error::other(format!("rendering JSON: {e}")))?;
        v["event"] = "summary".into();
        println!("{v}");
    } else {
        print!("{}", migrate::render(&summary));
    }
    Ok(0)
}

async fn run(command: Command) -> Result<u8> {
    match command {
        Command::Preflight(a) => {
            let source = ConnSpec::parse(&a.source.source, "source")?;
            let target = a
                .target
                .as_deref()
                .map(|t| ConnSpec::parse(t, "target"))
                .transpose()?;
            let report = preflight::run(&source, target.as_ref(), a.keyless).await?;
            if a.json {
                print_json(&serde_json::json!({ "blocked": report.blocked(), "report": report }))?;
            } else {
                print!("{}", preflight::render(&report));
            }
            Ok(if report.blocked() {
                Kind::Blocked.exit_code() as u8
            } else {
                0
            })
        }
        Command::Replicate(a) => {
            let source = ConnSpec::parse(&a.source.source, "source")?;
            let target = ConnSpec::parse(&a.target.target, "target")?;
            if a.chunk_mb == 0 {
                return Err(Error::usage("--chunk-mb must be at least 1")
                    .with_fix("leave --chunk-mb out (64 MB chunks), or give a size of 1 or more"));
            }
            if a.jobs == Some(0) {
                return Err(jobs_zero());
            }
            let opts = replicate::Options {
                jobs: a.jobs.unwrap_or(0),
                keyless: a.keyless,
                chunk_bytes: i64::from(a.chunk_mb) << 20,
                until: a.until,
                lock_timeout: std::time::Duration::from_millis(a.lock_timeout_ms.max(10)),
                capture_max_wait: std::time::Duration::from_secs(a.capture_max_wait_s),
                batch: a.batch.max(1),
            };
            run_replicate(source, target, opts).await
        }
        Command::Worker(a) => {
            let job = Job::load(&a.job)?;
            let source = ConnSpec::parse(&job.source_url, "source")?;
            let target = ConnSpec::parse(&job.target_url, "target")?;
            tracing::info!("running the job of migration {}", job.migration);
            let opts = replicate::Options {
                jobs: job.jobs.unwrap_or(0),
                keyless: job.keyless,
                chunk_bytes: 64 << 20,
                until: replicate::Until::Forever,
                lock_timeout: std::time::Duration::from_secs(1),
                capture_max_wait: std::time::Duration::from_secs(900),
                batch: 5000,
            };
            run_replicate(source, target, opts).await
        }
        Command::Init(a) => {
            let name = a.name.clone().unwrap_or_else(|| a.app.clone());
            heroku2rds::aws::spec::validate_name(&name)?;
            heroku2rds::aws::spec::validate_region(&a.region, "--region")?;
            if let Some(rr) = &a.replica_region {
                heroku2rds::aws::spec::validate_region(rr, "--replica-region")?;
            }
            if a.config.exists() && !a.force {
                return Err(
                    Error::usage(format!("{} exists already", a.config.display()))
                        .with_fix("edit it, or pass --force to overwrite it"),
                );
            }
            let text =
                heroku2rds::config::template(&a.app, &name, &a.region, a.replica_region.as_deref());
            std::fs::write(&a.config, text).map_err(|e| {
                Error::usage(format!("cannot write {}", a.config.display())).with_source(e)
            })?;
            println!(
                "wrote {} (edit it, then run `heroku2rds plan`)",
                a.config.display()
            );
            Ok(0)
        }
        Command::Plan(a) => {
            let r = provisioning::resolve(&a.aws).await?;
            let p = provisioning::make_plan(&r).await?;
            if a.json {
                print_json(&p.plan)?;
            } else {
                print!("{}", plan::render(&p.plan));
            }
            Ok(0)
        }
        Command::Provision(a) => {
            let r = provisioning::resolve(&a.aws).await?;
            let p = provisioning::make_plan(&r).await?;
            if !a.json {
                print!("{}", plan::render(&p.plan));
            }
            if a.dry_run {
                if a.json {
                    print_json(&provisioning::ProvisionOutput {
                        plan: &p.plan,
                        result: None,
                    })?;
                }
                return Ok(0);
            }
            if !p.plan.converged() && !a.yes {
                confirm("Create and change these AWS resources?", "provision")?;
            }
            let plan_copy = p.plan.clone();
            let done = provisioning::provision(
                &r,
                p,
                std::time::Duration::from_secs(a.wait_minutes.max(1) * 60),
            )
            .await?;
            if a.json {
                print_json(&provisioning::ProvisionOutput {
                    plan: &plan_copy,
                    result: Some(&done),
                })?;
            } else {
                let created = done.steps.iter().filter(|d| d.outcome != "exists").count();
                println!("provisioned: {created} resource(s) created or changed, the rest already existed");
                if let Some((host, port)) = &done.endpoint {
                    println!("RDS endpoint: {host}:{port}");
                }
                println!(
                    "master password: in Secrets Manager, secret {} (aws secretsmanager get-secret-value --secret-id {} --region {})",
                    done.secret, done.secret, r.spec.region
                );
                println!("archive bucket: s3://{}", done.bucket);
                if let Some(w) = &done.worker {
                    println!("worker: {w} (replication runs there under systemd; `heroku2rds status` shows progress)");
                }
            }
            Ok(0)
        }
        Command::Teardown(a) => {
            let t = provisioning::resolve_teardown(&a)?;
            let found = provisioning::find(&t).await?;
            if !a.yes {
                if a.delete_target {
                    confirm_typed(&t.name)?;
                } else {
                    confirm(
                        &format!(
                            "Remove the worker side of migration {} (the database stays)?",
                            t.name
                        ),
                        "teardown",
                    )?;
                }
            }
            let report = provisioning::teardown(&found, &t.name, &a).await?;
            if a.json {
                print_json(&report)?;
            } else {
                if report.removed.is_empty() {
                    println!(
                        "removed: nothing (nothing of migration {} was left to remove)",
                        t.name
                    );
                } else {
                    println!("removed:");
                    for r in &report.removed {
                        println!("  {r}");
                    }
                }
                if !report.kept.is_empty() {
                    println!("kept:");
                    for k in &report.kept {
                        println!("  {k}");
                    }
                }
            }
            Ok(0)
        }
        Command::Status(a) => {
            let target = ConnSpec::parse(&a.target.target, "target")?;
            let s = status::read(&target).await?;
            if a.json {
                print_json(&s)?;
            } else {
                print!("{}", status::render(&s));
            }
            Ok(0)
        }
        Command::Verify(a) => {
            let source = ConnSpec::parse(&a.source.source, "source")?;
            let target = ConnSpec::parse(&a.target.target, "target")?;
            let report = verify::run(&source, &target, a.jobs.max(1)).await?;
            if a.json {
                print_json(&report)?;
            } else {
                print!("{}", verify::render(&report));
            }
            Ok(if report.equal {
                0
            } else {
                Kind::Differences.exit_code() as u8
            })
        }
        Command::SyncSequences(a) => {
            let source = ConnSpec::parse(&a.source.source, "source")?;
            let target = ConnSpec::parse(&a.target.target, "target")?;
            let (src, tgt) = (source.connect().await?, target.connect().await?);
            sequences::check_target(&src, &tgt).await?;
            let n = sequences::sync(&src, &tgt).await?;
            println!("set {n} sequence(s) on the target to the source's values");
            Ok(0)
        }
        Command::Clean(a) => {
            let source = ConnSpec::parse(&a.source.source, "source")?;
            let target = a
                .target
                .as_deref()
                .map(|t| ConnSpec::parse(t, "target"))
                .transpose()?;
            let report = clean::run(&source, target.as_ref(), a.force).await?;
            println!("{report}");
            Ok(0)
        }
        Command::Cutover(a) => {
            let target = ConnSpec::parse(&a.target.target, "target")?;
            let app_url = a
                .target_app_url
                .clone()
                .unwrap_or_else(|| a.target.target.clone());
            cutover::check_app_url(&app_url)?;
            let source = a
                .source
                .as_deref()
                .map(|s| ConnSpec::parse(s, "source"))
                .transpose()?;
            if a.app.is_empty() {
                return Err(Error::usage("--app is empty"));
            }
            let client = heroku_client::Client::new(heroku_config()?)?;
            let secs = std::time::Duration::from_secs;
            let opts = cutover::Options {
                app: a.app.clone(),
                addon: a.addon.clone(),
                source,
                target,
                app_url,
                dry_run: a.dry_run,
                session_grace: secs(a.timing.session_grace_s),
                max_lag: secs(a.timing.max_lag_s),
                dyno_timeout: secs(a.timing.dyno_timeout_s),
                drain_timeout: secs(a.timing.drain_timeout_s),
                release_timeout: secs(a.timing.release_timeout_s),
                jobs: a.jobs.max(1),
                poll: std::time::Duration::from_millis(500),
            };
            let yes = a.yes;
            let app = a.app.clone();
            let mut confirm = move |plan: &[String]| -> Result<bool> {
                if yes {
                    Ok(true)
                } else {
                    confirm_on_terminal(&app, plan)
                }
            };
            let report = cutover::run(&client, &opts, &mut confirm, &cutover_signals()).await?;
            if a.json {
                print_json(&report)?;
            } else {
                print!("{}", cutover::render(&report));
            }
            Ok(0)
        }
        Command::Archive(a) => {
            let source = match (&a.source, a.via) {
                (Some(s), heroku2rds::cli::ArchiveVia::PgDump) => {
                    Some(ConnSpec::parse(s, "source")?)
                }
                _ => None,
            };
            let via = match a.via {
                heroku2rds::cli::ArchiveVia::Backup => archive::Via::Backup(a.backup.clone()),
                heroku2rds::cli::ArchiveVia::PgDump => {
                    if a.backup.is_some() {
                        return Err(Error::usage("--backup goes with --via backup")
                            .with_fix("leave out --backup, or --via pg_dump"));
                    }
                    archive::Via::PgDump(source.clone())
                }
            };
            let file = heroku2rds::config::load(a.config.as_deref())?;
            let app = a.app.clone().or(file.app).ok_or_else(|| {
                Error::usage("no Heroku app")
                    .with_fix("pass --app APP (or set app in heroku2rds.toml)")
            })?;
            let name = a.name.clone().or(file.name).ok_or_else(|| {
                Error::usage("no migration name").with_fix(
                    "pass --name NAME, the one given to provision (or set name in heroku2rds.toml)",
                )
            })?;
            let region = a
                .region
                .clone()
                .or(file.aws.region)
                .unwrap_or_else(|| provisioning::DEFAULT_REGION.to_string());
            let opts = archive::Options {
                app,
                name,
                region,
                addon: a.addon.clone(),
                via,
                poll: std::time::Duration::from_secs(1),
                backup_timeout: std::time::Duration::from_secs(a.backup_wait_minutes.max(1) * 60),
                stamp: None,
            };
            archive::validate(&opts)?;
            // The token is only needed to talk to Heroku.
            let client = if source.is_some() {
                None
            } else {
                Some(heroku_client::Client::new(heroku_config()?)?)
            };
            let aws = heroku2rds::aws::Aws::load(&opts.region, None).await;
            let done = archive::run(&aws, client.as_ref(), &opts, interrupted()).await?;
            if a.json {
                print_json(&done)?;
            } else {
                println!(
                    "archived {} to s3://{}/{}",
                    done.source, done.bucket, done.key
                );
                println!("bytes: {}", done.bytes);
                println!("sha256: {}", done.sha256);
            }
            Ok(0)
        }
        Command::Migrate(a) => run_migrate(a).await,
        Command::RefreshMatviews(a) => {
            let target = ConnSpec::parse(&a.target.target, "target")?;
            let n = sequences::refresh_matviews(&target.connect().await?).await?;
            println!("refreshed {n} materialized view(s) on the target");
            Ok(0)
        }
    }
}
