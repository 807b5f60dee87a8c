//! Command-line definitions only: raw values, no logic.

use clap::{Args, Parser, Subcommand};

pub mod config;
pub mod prompt;
pub mod render;
pub mod resolve;
pub mod signals;

use crate::pg::preflight::KeylessMode;
use crate::pg::replicate::Until;

/// What to do with tables that have no usable key (`--keyless`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeylessArg {
    /// Refuse to start while such tables exist.
    Error,
    /// Copy them whole (and again at cutover, while writes are stopped).
    Recopy,
    /// Create them on the target but copy no data.
    Exclude,
}

impl From<KeylessArg> for KeylessMode {
    fn from(a: KeylessArg) -> Self {
        match a {
            KeylessArg::Error => KeylessMode::Error,
            KeylessArg::Recopy => KeylessMode::Recopy,
            KeylessArg::Exclude => KeylessMode::Exclude,
        }
    }
}

/// When `replicate` returns (`--until`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UntilArg {
    /// Once every table is copied and indexed.
    Copied,
    /// Once the change log holds nothing committed (stop writes first for an exact copy).
    CaughtUp,
    /// Follow changes until interrupted (SIGINT/SIGTERM stop cleanly between batches).
    Forever,
}

impl From<UntilArg> for Until {
    fn from(a: UntilArg) -> Self {
        match a {
            UntilArg::Copied => Until::Copied,
            UntilArg::CaughtUp => Until::CaughtUp,
            UntilArg::Forever => Until::Forever,
        }
    }
}

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
    /// Write a commented heroku2rds.toml with every setting and its default.
    Init(InitArgs),
    /// Show what provision would create, find or change in AWS. Read-only.
    Plan(PlanArgs),
    /// Create the AWS side (security groups, RDS, replica, secret, bucket, worker). Converges when re-run.
    Provision(ProvisionArgs),
    /// Remove the AWS side by tag: the worker side always; the replica and the database only when asked.
    Teardown(TeardownArgs),
    /// Run a job description written by provision (what the EC2 worker's systemd unit runs).
    Worker(WorkerArgs),
    /// Switch a Heroku app from its Heroku Postgres database to the target, with rollback.
    Cutover(CutoverArgs),
    /// Stream the final Heroku backup (or a pg_dump of the source) into the migration's S3 bucket.
    Archive(ArchiveArgs),
    /// The whole migration, resumable: plan, provision, replicate, cut over, archive, summary.
    Migrate(MigrateArgs),
}

/// Where `migrate` runs replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerArg {
    /// On the EC2 worker provision creates; this process only watches (the laptop may sleep).
    Ec2,
    /// In this process, which must keep running until the cutover.
    Local,
}

/// What `migrate` archives after the cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveArg {
    /// A Heroku backup, captured after the switch.
    Backup,
    /// `pg_dump -Fc` of the Heroku database, run here.
    #[value(name = "pg_dump", alias = "pg-dump")]
    PgDump,
    /// No archive.
    None,
}

/// `migrate` arguments.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The Heroku app [default: `app` in heroku2rds.toml].
    #[arg(long, short = 'a', env = "HEROKU_APP")]
    pub app: Option<String>,
    /// Which Heroku Postgres add-on, when the app has several (add-on or attachment name).
    #[arg(long)]
    pub addon: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Where replication runs.
    #[arg(long, value_enum, default_value = "ec2")]
    pub runner: RunnerArg,
    /// What to archive into the bucket after the cutover.
    #[arg(long, value_enum, default_value = "backup")]
    pub archive: ArchiveArg,
    /// The URL the app gets as DATABASE_URL [default: the RDS endpoint with sslmode=require].
    #[arg(long, env = "HEROKU2RDS_TARGET_APP_URL", hide_env_values = true)]
    pub target_app_url: Option<String>,
    #[command(flatten)]
    pub cutover: CutoverTimingArgs,
    /// Do not ask (the plan and the cutover are confirmed in advance).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print events and the summary as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Longest wait for the RDS primary to become available, in minutes.
    #[arg(long, default_value_t = 60)]
    pub wait_minutes: u64,
    /// Longest wait for the EC2 worker to start replicating, in minutes.
    #[arg(long, default_value_t = 20)]
    pub worker_start_minutes: u64,
    /// Longest wait for the Heroku backup of the archive, in minutes.
    #[arg(long, default_value_t = 360)]
    pub backup_wait_minutes: u64,
}

/// The cutover's waits, limits and scope (what it moves besides the app's DATABASE).
#[derive(Debug, Clone, Args)]
pub struct CutoverTimingArgs {
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
    /// Longest wait for a release (with its release phase: Heroku allows one hour), seconds.
    #[arg(long, default_value_t = 3600)]
    pub release_timeout_s: u64,
    /// Another app attached to the same Heroku database: frozen and switched together (repeatable).
    #[arg(long = "include-app", value_name = "APP")]
    pub include_apps: Vec<String>,
    /// Move Heroku's connection pooler attachment (DATABASE_CONNECTION_POOL_URL) too: its
    /// variable then points at --pooler-url, or at the target.
    #[arg(long)]
    pub move_pooler: bool,
    /// The URL the pooler's variable gets with --move-pooler (an RDS Proxy or PgBouncer in front
    /// of the target) [default: the app's new DATABASE_URL].
    #[arg(long, env = "HEROKU2RDS_POOLER_URL", hide_env_values = true)]
    pub pooler_url: Option<String>,
    /// Move colour aliases (HEROKU_POSTGRESQL_<COLOR>_URL) and credential attachments of the
    /// database too: their variables then point at the target.
    #[arg(long)]
    pub move_aliases: bool,
}

impl CutoverTimingArgs {
    /// What the cutover may move besides the app's DATABASE.
    pub fn consent(&self) -> crate::cutover::attachments::Consent {
        crate::cutover::attachments::Consent {
            include_apps: self.include_apps.clone(),
            move_pooler: self.move_pooler,
            move_aliases: self.move_aliases,
        }
    }
}

/// Where `archive` takes the dump from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveVia {
    /// A Heroku backup (captured now, or --backup).
    Backup,
    /// `pg_dump -Fc` of the source, run here (for databases too big for Heroku's backups).
    #[value(name = "pg_dump", alias = "pg-dump")]
    PgDump,
}

/// `archive` arguments.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Config file (default: ./heroku2rds.toml when it exists).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The Heroku app [default: `app` in heroku2rds.toml].
    #[arg(long, short = 'a', env = "HEROKU_APP")]
    pub app: Option<String>,
    /// The migration's name (as given to provision): decides the bucket [default: `name` in heroku2rds.toml].
    #[arg(long)]
    pub name: Option<String>,
    /// Region of the bucket (provision's --region) [default: heroku2rds.toml's, else us-east-2].
    #[arg(long)]
    pub region: Option<String>,
    /// Archive this existing backup (e.g. b005) instead of capturing one.
    #[arg(long)]
    pub backup: Option<String>,
    /// Where the dump comes from.
    #[arg(long, value_enum, default_value = "backup")]
    pub via: ArchiveVia,
    /// Which Heroku Postgres add-on, when the app has several (add-on or attachment name).
    #[arg(long)]
    pub addon: Option<String>,
    /// With --via pg_dump: the database URL to dump (default: the app's DATABASE_URL).
    #[arg(long, env = "HEROKU2RDS_SOURCE_URL", hide_env_values = true)]
    pub source: Option<String>,
    /// Longest wait for the backup to finish, in minutes.
    #[arg(long, default_value_t = 360)]
    pub backup_wait_minutes: u64,
    /// Print {bucket,key,bytes,sha256,source} as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The Heroku app to migrate.
    #[arg(long, short = 'a')]
    pub app: String,
    /// The migration's name [default: the app's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Region of the RDS primary [default: us-east-2].
    #[arg(long, default_value = "us-east-2")]
    pub region: String,
    /// Region of an optional cross-region read replica.
    #[arg(long)]
    pub replica_region: Option<String>,
    /// Where to write it.
    #[arg(long, default_value = "heroku2rds.toml")]
    pub config: std::path::PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Settings shared by `plan`, `provision` and `migrate`; each overrides heroku2rds.toml.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Config file (default: ./heroku2rds.toml when it exists).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The migration's name: part of every resource name and the value of the heroku2rds:migration tag.
    #[arg(long)]
    pub name: Option<String>,
    /// Region of the RDS primary, the worker and the bucket [default: us-east-2].
    #[arg(long)]
    pub region: Option<String>,
    /// Region of an optional cross-region read replica (e.g. us-east-1).
    #[arg(long)]
    pub replica_region: Option<String>,
    /// Address range admitted to the database (and SSH): your public address by default, detected.
    #[arg(long)]
    pub operator_cidr: Option<String>,
    /// Further ranges admitted to 5432, e.g. the app's static outbound addresses (repeatable).
    #[arg(long = "app-cidr")]
    pub app_cidrs: Vec<String>,
    /// Admit 5432 from anywhere (TLS and the password are still required). Off unless given.
    #[arg(long)]
    pub open_to_internet: bool,
    /// Source database URL, to read its size and version (and for the worker's job).
    #[arg(long, env = "HEROKU2RDS_SOURCE_URL", hide_env_values = true)]
    pub source: Option<String>,
    /// Source size in GB, instead of reading it from the source.
    #[arg(long)]
    pub source_size_gb: Option<f64>,
    /// Source PostgreSQL major version, instead of reading it from the source.
    #[arg(long)]
    pub source_major: Option<u32>,
    /// PostgreSQL major version of the RDS database [default: the source's]; never below it.
    #[arg(long)]
    pub engine_major: Option<u32>,
    /// RDS instance class [default: sized from the source, e.g. db.m7g.large].
    #[arg(long)]
    pub db_instance_class: Option<String>,
    /// Turn on RDS storage autoscaling up to this many GiB (off by default).
    #[arg(long)]
    pub storage_autoscaling_max_gb: Option<i32>,
    /// A standby in a second availability zone (recommended for production; doubles the instance cost).
    #[arg(long)]
    pub multi_az: bool,
    /// Keep the RDS database on its major after standard support ends, billed as RDS Extended Support (off unless given).
    #[arg(long)]
    pub extended_support: bool,
    /// The VPC of the database and the worker [default: the region's default VPC]; needs --subnet-ids.
    #[arg(long)]
    pub vpc_id: Option<String>,
    /// Subnets for the database (at least two availability zones) and the worker (the first; it needs an internet gateway route or a NAT), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub subnet_ids: Vec<String>,
    /// The VPC of the replica, in --replica-region [default: that region's default VPC].
    #[arg(long)]
    pub replica_vpc_id: Option<String>,
    /// Subnets of the replica in --replica-region (at least two availability zones), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub replica_subnet_ids: Vec<String>,
    /// EC2 instance type of the worker [default: sized from the source, e.g. m7i.large].
    #[arg(long)]
    pub worker_instance_type: Option<String>,
    /// Worker CPU architecture: amd64 or arm64 [default: amd64].
    #[arg(long)]
    pub worker_arch: Option<String>,
    /// The Linux heroku2rds binary for the worker, uploaded [default: this binary, when it is one];
    /// checked before anything is created (the worker's CPU, glibc 2.39 or older).
    #[arg(long)]
    pub worker_binary: Option<std::path::PathBuf>,
    /// Instead of uploading a binary: an https URL the worker downloads a Linux heroku2rds
    /// binary from (e.g. a release download; for operators on macOS or another architecture).
    #[arg(long)]
    pub worker_binary_url: Option<String>,
    /// SHA-256 (64 hex digits) of the binary at --worker-binary-url; the worker refuses any other.
    #[arg(long)]
    pub worker_binary_sha256: Option<String>,
    /// Provision the database side only, without the worker.
    #[arg(long)]
    pub no_worker: bool,
    /// OpenSSH public key file: installs it on the worker and opens SSH from the operator range only.
    #[arg(long)]
    pub ssh_public_key: Option<std::path::PathBuf>,
    /// Parallel copy workers on the worker.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// How the worker handles tables without a usable key.
    #[arg(long, value_enum, default_value = "error")]
    pub keyless: KeylessArg,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// How this machine reaches the RDS database.
#[derive(Debug, Clone, Args)]
pub struct ReachArgs {
    /// Reach the RDS database through HOST:PORT, e.g. the local end of an SSH tunnel through the
    /// worker (`ssh -L 15432:ENDPOINT:5432 ubuntu@WORKER`); TLS still checks the certificate
    /// against the RDS host name.
    #[arg(long, env = "HEROKU2RDS_TARGET_CONNECT")]
    pub target_connect: Option<String>,
    /// CA bundle that signed the RDS certificate [default: AWS's global RDS bundle, downloaded
    /// once from truststore.pki.rds.amazonaws.com and cached].
    #[arg(long, env = "HEROKU2RDS_CA_BUNDLE")]
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// `plan` arguments.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `provision` arguments.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan and the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Longest wait for the RDS primary to become available, in minutes.
    #[arg(long, default_value_t = 60)]
    pub wait_minutes: u64,
}

/// `teardown` arguments.
#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// Config file (default: ./heroku2rds.toml when it exists).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The migration's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Region of the primary [default: us-east-2].
    #[arg(long)]
    pub region: Option<String>,
    /// Region of the read replica, if one was provisioned.
    #[arg(long)]
    pub replica_region: Option<String>,
    /// Also delete the cross-region read replica.
    #[arg(long)]
    pub include_replica: bool,
    /// Also delete the RDS primary (after a final snapshot), its security group, parameter group,
    /// master secret and the archive bucket with its contents.
    #[arg(long)]
    pub delete_target: bool,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print what was removed and kept as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Longest wait for each deletion, in minutes.
    #[arg(long, default_value_t = 30)]
    pub wait_minutes: u64,
}

/// `worker` arguments.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The job description file.
    #[arg(long)]
    pub job: std::path::PathBuf,
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
    #[command(flatten)]
    pub timing: CutoverTimingArgs,
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
    pub keyless: KeylessArg,
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
    pub until: UntilArg,
    /// Parallel workers (each uses one connection to each database); default from cores and the
    /// source's free connection slots.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Tables without a usable key: refuse (error), copy whole (recopy), or skip their data (exclude).
    #[arg(long, value_enum, default_value = "error")]
    pub keyless: KeylessArg,
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
    /// While following, verify in the background reading at most this many MB of table data per
    /// second from each database (0 turns it off; the cutover then compares every table).
    #[arg(long, default_value_t = 4.0)]
    pub verify_rate_mb: f64,
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
