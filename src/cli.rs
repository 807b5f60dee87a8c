//! Command-line definitions only: raw values, no logic.

use clap::{Args, Parser, Subcommand};

use crate::pg::preflight::KeylessMode;
use crate::pg::replicate::Until;

/// Move a production PostgreSQL database from Heroku to Amazon RDS with seconds of write downtime.
#[derive(Debug, Parser)]
#[command(name = "heroku2rds", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter for stderr (e.g. `info`, `debug`); also HEROKU2RDS_LOG.
    #[arg(long, global = true, env = "HEROKU2RDS_LOG", default_value = "info")]
    pub log: String,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the source (and target) for anything that would break the migration. Read-only.
    Preflight(PreflightArgs),
    /// Copy the schema and every table from the source to the target, resumably.
    Replicate(ReplicateArgs),
    /// Show the progress recorded on the target. Read-only; works while replicate runs.
    Status(StatusArgs),
    /// Compare source and target by counts, key ranges and checksums. Exit 1 on any difference.
    Verify(VerifyArgs),
    /// Set every sequence on the target to the source's value.
    SyncSequences(PairArgs),
    /// Refresh every materialized view on the target.
    RefreshMatviews(TargetArgs),
    /// Remove capture triggers, functions, the change log and the tool's schemas. Idempotent.
    Clean(CleanArgs),
    /// Switch a Heroku app from its Heroku Postgres database to the target, with rollback.
    Cutover(CutoverArgs),
}

/// `cutover` arguments.
#[derive(Debug, Args)]
pub struct CutoverArgs {
    /// The Heroku app.
    #[arg(long, short = 'a', env = "HEROKU_APP")]
    pub app: String,
    /// Which Heroku Postgres add-on is the source, when the app has several (add-on name or
    /// attachment name).
    #[arg(long)]
    pub addon: Option<String>,
    /// Source database URL; default: the app's DATABASE_URL, read from Heroku.
    #[arg(long, env = "HEROKU2RDS_SOURCE_URL", hide_env_values = true)]
    pub source: Option<String>,
    #[command(flatten)]
    pub target: TargetArg,
    /// The URL the app gets as DATABASE_URL (default: --target). Must require TLS
    /// (sslmode=require or stronger).
    #[arg(long, env = "HEROKU2RDS_TARGET_APP_URL", hide_env_values = true)]
    pub target_app_url: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Check readiness and print the steps without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the step log and the measured downtime as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds the app's sessions on the source get to end before they are terminated.
    #[arg(long, default_value_t = 30)]
    pub session_grace_s: u64,
    /// Largest replication lag (age of the oldest unapplied change, seconds) accepted at start.
    #[arg(long, default_value_t = 30)]
    pub max_lag_s: u64,
    /// Longest wait for dynos to stop or to come up, seconds.
    #[arg(long, default_value_t = 300)]
    pub dyno_timeout_s: u64,
    /// Longest wait for a running replicate to empty the change log, seconds.
    #[arg(long, default_value_t = 300)]
    pub drain_timeout_s: u64,
    /// Longest wait for the release that switches DATABASE_URL, seconds.
    #[arg(long, default_value_t = 900)]
    pub release_timeout_s: u64,
    /// Parallel comparisons of the final verification.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
}

/// `clean` arguments.
#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub source: SourceArg,
    /// Also remove the migration state from this target database.
    #[arg(long, env = "HEROKU2RDS_TARGET_URL", hide_env_values = true)]
    pub target: Option<String>,
    /// Clean even while a replicate seems to be running.
    #[arg(long)]
    pub force: bool,
}

/// The source database URL.
#[derive(Debug, Args)]
pub struct SourceArg {
    /// Source database URL (the Heroku database), e.g. postgres://user:pass@host:5432/db?sslmode=require.
    /// Prefer the environment variable: arguments are visible in the process list.
    #[arg(long, env = "HEROKU2RDS_SOURCE_URL", hide_env_values = true)]
    pub source: String,
}

/// The target database URL.
#[derive(Debug, Args)]
pub struct TargetArg {
    /// Target database URL (the RDS database), e.g. postgres://user:pass@host:5432/db?sslmode=verify-full&sslrootcert=rds-ca.pem.
    #[arg(long, env = "HEROKU2RDS_TARGET_URL", hide_env_values = true)]
    pub target: String,
}

/// `preflight` arguments.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    #[command(flatten)]
    pub source: SourceArg,
    /// Target database URL, to check versions and extensions against it.
    #[arg(long, env = "HEROKU2RDS_TARGET_URL", hide_env_values = true)]
    pub target: Option<String>,
    /// How tables without a usable key will be handled.
    #[arg(long, value_enum, default_value = "error")]
    pub keyless: KeylessMode,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `replicate` arguments.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// When to return.
    #[arg(long, value_enum, default_value = "copied")]
    pub until: Until,
    /// Parallel workers (each uses one connection to each database); default from cores and the
    /// source's free connection slots.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Tables without a usable key: refuse (error), copy whole (recopy), or skip their data (exclude).
    #[arg(long, value_enum, default_value = "error")]
    pub keyless: KeylessMode,
    /// Size of a copy chunk in MB.
    #[arg(long, default_value_t = 64)]
    pub chunk_mb: u32,
    /// Lock timeout of each attempt to install a capture trigger, in milliseconds: the longest the
    /// application can queue behind the tool.
    #[arg(long, default_value_t = 1000)]
    pub lock_timeout_ms: u64,
    /// Give up installing capture on a table after waiting this many seconds for its lock.
    #[arg(long, default_value_t = 900)]
    pub capture_max_wait_s: u64,
    /// Change-log rows applied per batch.
    #[arg(long, default_value_t = 5000)]
    pub batch: i64,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// Parallel comparisons.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Source and target.
#[derive(Debug, Args)]
pub struct PairArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
}

/// Target only.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub target: TargetArg,
}
