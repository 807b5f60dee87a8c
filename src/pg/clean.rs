//! `clean`: removes every object of the tool from the source (capture and fence triggers,
//! functions, the change log, the `heroku2rds` schema, the write fence's read-only default)
//! and, when given, the migration state from the target.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::pg::conn::{query_error, ConnSpec};
use crate::pg::store::{self, RunnerLock};
use crate::pg::{capture, fence};

/// Cleans both sides. Refuses while a replicate runs unless `force`.
pub async fn run(source: &ConnSpec, target: Option<&ConnSpec>, force: bool) -> Result<String> {
    let src = source.connect().await?;
    let _lock = match target {
        Some(t) if !force => Some(
            RunnerLock::acquire(t.connect().await?, "clean")
                .await
                .map_err(|e| {
                    Error::usage(format!(
                        "{}: refusing to clean under a running replicate",
                        e.message()
                    ))
                    .with_fix("stop it first, or pass --force")
                })?,
        ),
        _ => None,
    };
    if !force {
        let others: i64 = src
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()",
                &[&crate::pg::replicate::SOURCE_APPLICATION_NAME],
            )
            .await
            .map_err(|e| query_error(e, "looking for running heroku2rds sessions"))?
            .get(0);
        if others > 0 {
            return Err(Error::usage(format!(
                "{others} session(s) of a heroku2rds replicate are connected to the source: it seems to be running"
            ))
            .with_fix("stop it first, or pass --force"));
        }
    }
    let had_schema: bool = src
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'heroku2rds')",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "looking for the heroku2rds schema"))?
        .get(0);
    // The write fence first: the database's read-only default restored, the function harmless.
    fence::lower(&src).await?;
    let removed = capture::remove(&src, Duration::from_secs(1)).await?;
    let mut report = if removed == 0 && !had_schema {
        "source: nothing to remove (no capture trigger, no heroku2rds schema)".to_string()
    } else {
        format!("source: removed {removed} capture trigger(s) and the heroku2rds schema")
    };
    if let Some(t) = target {
        let tgt = t.connect().await?;
        let had = store::load(&tgt).await?.is_some();
        tgt.batch_execute("DROP SCHEMA IF EXISTS heroku2rds CASCADE")
            .await
            .map_err(|e| query_error(e, "dropping the heroku2rds schema on the target"))?;
        report.push_str(if had {
            "\ntarget: removed the migration state (the copied data stays)"
        } else {
            "\ntarget: no migration state to remove"
        });
    }
    Ok(report)
}
