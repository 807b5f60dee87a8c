//! The heroku2rds binary: parse arguments, set up logging, run the command, print the error
//! once (with its cause chain and fix), exit with the code of its kind.

use std::process::ExitCode;

use clap::Parser;
use heroku2rds::cli::Cli;
use heroku2rds::commands;
use heroku2rds::error::error_chain;
use heroku2rds::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    warn_about_passwords_in_arguments(std::env::args().skip(1));
    match try_main(cli) {
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

fn try_main(cli: Cli) -> Result<u8, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::other("cannot start the async runtime").with_source(e))?;
    runtime.block_on(commands::run(cli.command))
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
        .with_writer(|| heroku2rds::cli::render::LogWriter)
        .with_target(false)
        .try_init();
}

fn render_error(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {}", error_chain(src)),
        None => e.to_string(),
    }
}
