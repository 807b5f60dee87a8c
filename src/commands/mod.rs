//! One thin handler per subcommand: arguments -> typed settings -> a library call -> rendered
//! output -> an exit code. Nothing here decides how a migration works.

mod archive;
mod aws;
mod clean;
mod cutover;
mod init;
mod migrate;
mod preflight;
mod replicate;
mod sequences;
mod status;
mod verify;

use crate::cli::Command;
use crate::error::{Error, Result};
use crate::heroku::client as heroku_client;

/// Runs one subcommand and returns the process exit code.
pub async fn run(command: Command) -> Result<u8> {
    match command {
        Command::Preflight(a) => preflight::run(a).await,
        Command::Replicate(a) => replicate::run(a).await,
        Command::Worker(a) => replicate::worker(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::SyncSequences(a) => sequences::sync(a).await,
        Command::RefreshMatviews(a) => sequences::refresh_matviews(a).await,
        Command::Clean(a) => clean::run(a).await,
        Command::Init(a) => init::run(a),
        Command::Plan(a) => aws::plan(a).await,
        Command::Provision(a) => aws::provision(a).await,
        Command::Teardown(a) => aws::teardown(a).await,
        Command::Cutover(a) => cutover::run(a).await,
        Command::Archive(a) => archive::run(a).await,
        Command::Migrate(a) => migrate::run(a).await,
    }
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::other("rendering JSON").with_source(e))?;
    println!("{s}");
    Ok(())
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
