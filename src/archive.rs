//! `heroku2rds archive`: the final backup of the Heroku database, streamed into the migration's
//! S3 bucket without touching the local disk.
//!
//! Two sources: a Heroku backup (captured now through the data API, or an existing one by id),
//! downloaded from its signed URL by the credential-free client; or `pg_dump -Fc` of the source
//! run here (for databases too large for Heroku's backups). Either way the bytes go through
//! [`PartWriter`] (one 16 MiB part in memory), which counts and hashes them. A backup's byte
//! count is checked against the size Heroku reports before the upload completes. Any failure,
//! and Ctrl-C, aborts the multipart upload; a re-run starts a fresh one under a new key.

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::aws::s3::{check_bucket, PartWriter, Stored};
use crate::aws::{spec, Aws};
use crate::error::{Error, Result};
use crate::heroku::app::{App, PREVIOUS_DATABASE_ATTACHMENT};
use crate::heroku::backups::{parse_backup_id, Backups, Status, Transfer};
use crate::heroku::client::Client;
use crate::heroku::poll::Pace;
use crate::pg::conn::ConnSpec;
use crate::pg::progress::{Sink, Unit};

/// Where the archive comes from.
#[derive(Debug, Clone)]
pub enum Via {
    /// A Heroku backup: `Some(id)` an existing one, `None` capture one now.
    Backup(Option<String>),
    /// `pg_dump -Fc` of this source (None: the app's `DATABASE_URL`, read from Heroku).
    PgDump(Option<ConnSpec>),
}

/// Validated options.
#[derive(Debug, Clone)]
pub struct Options {
    pub app: String,
    pub name: String,
    pub region: String,
    /// The Heroku Postgres add-on (name, id or attachment name); None: the app's database as
    /// [`App::database`] finds it (`DATABASE`, else the cutover's previous-database attachment,
    /// else the only one).
    pub addon: Option<String>,
    pub via: Via,
    /// Longest wait for a backup to finish.
    pub backup_timeout: Duration,
    /// Seconds since the epoch that date the object key; None: now. `migrate` records it so a
    /// re-run writes the same key instead of a second archive.
    pub stamp: Option<u64>,
}

/// The result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Archived {
    pub bucket: String,
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    /// `backup b005` or `pg_dump`.
    pub source: String,
}

/// Validates the names before anything is called.
pub fn validate(opts: &Options) -> Result<()> {
    if opts.app.is_empty() {
        return Err(Error::usage("--app is empty"));
    }
    spec::validate_name(&opts.name)?;
    spec::validate_region(&opts.region, "--region")?;
    if let Via::Backup(Some(id)) = &opts.via {
        parse_backup_id(id)?;
    }
    Ok(())
}

/// The object key: `archive/APP-LABEL-YYYYMMDDTHHMMSSZ.dump`.
pub fn object_key(app: &str, label: &str, unix_secs: u64) -> String {
    format!("archive/{app}-{label}-{}.dump", utc_stamp(unix_secs))
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (UTC).
fn utc_stamp(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Runs the archive. `heroku` is needed unless `--via pg_dump --source` was given; `cancel`
/// resolves on Ctrl-C.
pub async fn run(
    aws: &Aws,
    heroku: Option<&Client>,
    opts: &Options,
    cancel: impl Future<Output = ()>,
    sink: &dyn Sink,
) -> Result<Archived> {
    let mut cancel = std::pin::pin!(cancel);
    let account = aws.account().await?;
    let bucket = spec::bucket_name(&opts.name, &account, &opts.region);
    check_bucket(aws, &bucket, &opts.name).await?;
    let now = opts.stamp.unwrap_or_else(unix_now);
    let need_heroku = || {
        heroku.ok_or_else(|| {
            Error::usage("no Heroku token")
                .with_fix("set HEROKU_API_KEY (or log in with `heroku login`)")
        })
    };

    match &opts.via {
        Via::Backup(id) => {
            let client = need_heroku()?;
            let db = App::new(client, &opts.app)
                .database(opts.addon.as_deref())
                .await?;
            let backups = Backups::new(client, &db.addon.app.name, &db.addon.id);
            let t = tokio::select! {
                t = backup(client, &backups, id.as_deref(), opts) => t?,
                _ = &mut cancel => return Err(Error::other(
                    "interrupted while waiting for the backup; nothing was uploaded",
                ).with_fix("the backup keeps running on Heroku: re-run with --backup ID once it finished")),
            };
            let expected = u64::try_from(t.processed_bytes).unwrap_or(0);
            let url = backups.public_url(t.num).await?;
            let mut resp = client.download(&url).await?;
            if let Some(len) = resp.content_length() {
                if len != expected {
                    return Err(Error::other(format!(
                        "backup {} is {expected} bytes by Heroku's report but the download is {len} bytes",
                        t.label()
                    ))
                    .with_fix("re-run; if it persists, capture a new backup"));
                }
            }
            let key = object_key(&opts.app, &t.label(), now);
            let meta = vec![
                ("app".to_string(), opts.app.clone()),
                ("source".to_string(), format!("backup {}", t.label())),
            ];
            let mut w = PartWriter::start(aws, &bucket, &key, meta, Some(expected)).await?;
            tracing::info!(
                "streaming backup {} ({expected} bytes) to s3://{bucket}/{key}",
                t.label()
            );
            let pumped = tokio::select! {
                r = pump_http(&mut resp, &mut w, sink, Some(expected)) => r,
                _ = &mut cancel => Err(Error::other("interrupted")),
            };
            if let Err(e) = pumped {
                return Err(w.abort_with(e).await);
            }
            let label = t.label();
            let stored = w
                .finish(|bytes| {
                    if bytes == expected {
                        Ok(())
                    } else {
                        Err(Error::other(format!(
                            "backup {label} is {expected} bytes by Heroku's report, but {bytes} bytes arrived"
                        ))
                        .with_fix("re-run to download it again"))
                    }
                })
                .await?;
            Ok(archived(stored, format!("backup {label}")))
        }
        Via::PgDump(source) => {
            let source = match source {
                Some(s) => s.clone(),
                None => app_database_url(need_heroku()?, opts).await?,
            };
            let key = object_key(&opts.app, "pg_dump", now);
            let meta = vec![
                ("app".to_string(), opts.app.clone()),
                ("source".to_string(), "pg_dump".to_string()),
            ];
            let mut child = tokio::process::Command::new("pg_dump")
                .args(["--format=custom", "--no-acl", "--no-owner", "--dbname"])
                .arg(source.libpq_conninfo())
                .envs(source.child_env())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    Error::usage("cannot run pg_dump").with_source(e).with_fix(
                        "install the PostgreSQL client tools of the source's major version or newer",
                    )
                })?;
            let mut w = PartWriter::start(aws, &bucket, &key, meta, None).await?;
            tracing::info!("streaming pg_dump of the source to s3://{bucket}/{key}");
            let pumped = tokio::select! {
                r = pump_pg_dump(&mut child, &mut w, sink) => r,
                _ = &mut cancel => Err(Error::other("interrupted")),
            };
            if let Err(e) = pumped {
                let _ = child.start_kill();
                return Err(w.abort_with(e).await);
            }
            let stored = w.finish(|_| Ok(())).await?;
            Ok(archived(stored, "pg_dump".into()))
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts a backup of the app's database and returns its label (`b005`) at once, so a caller
/// can record it before waiting (`migrate` resumes with `--backup`).
pub async fn capture(client: &Client, app: &str, addon: Option<&str>) -> Result<String> {
    let db = App::new(client, app).database(addon).await?;
    let t = Backups::new(client, &db.addon.app.name, &db.addon.id)
        .capture()
        .await?;
    tracing::info!(
        "capturing backup {} of app {app} (it counts against the plan's backup retention)",
        t.label()
    );
    Ok(t.label())
}

fn archived(s: Stored, source: String) -> Archived {
    Archived {
        bucket: s.bucket,
        key: s.key,
        bytes: s.bytes,
        sha256: s.sha256,
        source,
    }
}

/// The backup to archive: the given one (must have succeeded), or a new capture, awaited with
/// progress lines.
async fn backup(
    client: &Client,
    backups: &Backups<'_>,
    id: Option<&str>,
    opts: &Options,
) -> Result<Transfer> {
    if let Some(id) = id {
        let num = parse_backup_id(id)?;
        let t = backups.transfer(&num.to_string()).await?;
        return match t.status() {
            Status::Completed => Ok(t),
            // Still running (e.g. captured by an interrupted `migrate`): wait for it.
            Status::Pending | Status::Running => wait_backup(client, backups, t, opts).await,
            other => Err(Error::usage(format!(
                "backup {} has not succeeded ({other:?})",
                t.label()
            ))
            .with_fix("pick a finished backup from `heroku pg:backups`, or leave --backup out to capture one")),
        };
    }
    let t = backups.capture().await?;
    tracing::info!(
        "capturing backup {} of app {} (it counts against the plan's backup retention)",
        t.label(),
        opts.app
    );
    wait_backup(client, backups, t, opts).await
}

/// Waits for a backup to finish at the pace of [`Pace::backups`], logging its progress.
async fn wait_backup(
    client: &Client,
    backups: &Backups<'_>,
    t: Transfer,
    opts: &Options,
) -> Result<Transfer> {
    let mut last = -1;
    backups
        .wait(
            &t.num.to_string(),
            Pace::backups(client),
            opts.backup_timeout,
            |t| {
                if t.processed_bytes != last {
                    last = t.processed_bytes;
                    tracing::info!(
                        "backup {}: {} bytes processed",
                        t.label(),
                        t.processed_bytes
                    );
                }
            },
        )
        .await
}

/// The Heroku database's URL as a source: its `DATABASE_URL`, or after a cutover the URL of its
/// previous-database attachment (TLS required when the URL says nothing).
async fn app_database_url(client: &Client, opts: &Options) -> Result<ConnSpec> {
    let app = App::new(client, &opts.app);
    let db = app.database(opts.addon.as_deref()).await?;
    let vars = app.config_vars().await?;
    let attachment = match db.database_attachment {
        Some(a) => Some(a),
        None => app.attachments().await?.into_iter().find(|a| {
            a.addon.id == db.addon.id
                && a.name == PREVIOUS_DATABASE_ATTACHMENT
                && a.app.name == opts.app
                && a.namespace.is_none()
        }),
    };
    let url = attachment
        .as_ref()
        .and_then(|a| vars.get(&format!("{}_URL", a.name)).cloned().flatten())
        .ok_or_else(|| {
            Error::usage(format!("app {} has no DATABASE_URL to dump", opts.app))
                .with_fix("pass the database URL as --source")
        })?;
    let url = crate::heroku::app::with_tls_required(&url);
    ConnSpec::parse(&url, "DATABASE_URL of the app")
}

/// Bytes uploaded so far, for the progress display.
fn uploaded(sink: &dyn Sink, w: &PartWriter, expected: Option<u64>) {
    sink.advance("archive", Unit::Bytes, w.bytes(), expected);
}

async fn pump_http(
    resp: &mut reqwest::Response,
    w: &mut PartWriter,
    sink: &dyn Sink,
    expected: Option<u64>,
) -> Result<()> {
    loop {
        // reqwest's error names the signed URL, a credential: not kept.
        let chunk = resp.chunk().await.map_err(|e| {
            Error::other(format!("downloading the backup after {} bytes", w.bytes()))
                .with_source(e.without_url())
                .with_fix("re-run: signed URLs are fetched afresh each time")
        })?;
        match chunk {
            Some(c) => {
                w.write(&c).await?;
                uploaded(sink, w, expected);
            }
            None => return Ok(()),
        }
    }
}

async fn pump_pg_dump(
    child: &mut tokio::process::Child,
    w: &mut PartWriter,
    sink: &dyn Sink,
) -> Result<()> {
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::other("pg_dump has no stdout"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::other("pg_dump has no stderr"))?;
    // pg_dump writes little to stderr; read it alongside so it can never block on a full pipe.
    let errors = async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    };
    let copy = async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), Error>(());
            }
            w.write(&buf[..n]).await?;
            uploaded(sink, w, None);
        }
    };
    let errors = tokio::spawn(errors);
    if let Err(e) = copy.await {
        // The caller kills pg_dump; its stderr is not awaited (it may never close).
        errors.abort();
        return Err(e);
    }
    let errors = errors.await.unwrap_or_default();
    let status = child.wait().await?;
    if !status.success() {
        return Err(
            Error::other(format!("pg_dump failed ({status}): {}", errors.trim()))
                .with_fix("fix what pg_dump reports, then re-run"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_764_022_585), "20251124T221625Z");
        assert_eq!(
            object_key("acme", "b005", 0),
            "archive/acme-b005-19700101T000000Z.dump"
        );
    }
}
