//! `archive`: the final Heroku backup (or a pg_dump of the source) streamed into S3.

use std::time::Duration;

use super::{heroku_config, print_json};
use crate::archive;
use crate::cli::render::{self, Mode};
use crate::cli::{config, resolve, signals, ArchiveArgs, ArchiveVia};
use crate::error::{Error, Result};
use crate::heroku::client::Client;
use crate::pg::conn::ConnSpec;

pub async fn run(a: ArchiveArgs) -> Result<u8> {
    let source = match (&a.source, a.via) {
        (Some(s), ArchiveVia::PgDump) => Some(ConnSpec::parse(s, "source")?),
        _ => None,
    };
    let via = match a.via {
        ArchiveVia::Backup => archive::Via::Backup(a.backup.clone()),
        ArchiveVia::PgDump => {
            if a.backup.is_some() {
                return Err(Error::usage("--backup goes with --via backup")
                    .with_fix("leave out --backup, or --via pg_dump"));
            }
            archive::Via::PgDump(source.clone())
        }
    };
    let file = config::load(a.config.as_deref())?;
    let app = a.app.clone().or(file.app).ok_or_else(|| {
        Error::usage("no Heroku app").with_fix("pass --app APP (or set app in heroku2rds.toml)")
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
        .unwrap_or_else(|| resolve::DEFAULT_REGION.to_string());
    let opts = archive::Options {
        app,
        name,
        region,
        addon: a.addon.clone(),
        via,
        backup_timeout: Duration::from_secs(a.backup_wait_minutes.max(1) * 60),
        stamp: None,
    };
    archive::validate(&opts)?;
    // The token is only needed to talk to Heroku.
    let client = if source.is_some() {
        None
    } else {
        Some(Client::new(heroku_config()?)?)
    };
    let aws = crate::aws::Aws::load(&opts.region, None).await;
    // Bytes uploaded on stderr; stdout holds the result.
    let sink = render::sink(Mode::detect(false));
    let cancel = signals::aborting();
    let done = archive::run(
        &aws,
        client.as_ref(),
        &opts,
        cancel.cancelled(),
        sink.as_ref(),
    )
    .await?;
    drop(sink);
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
