//! Sequences and materialized views: the objects whose state is not carried by table rows.

use tokio_postgres::Client;

use super::catalog;
use super::conn::{query_error, quote_literal};
use crate::error::{Error, Result};

/// Refuses, before any sequence is set, when the target lacks some of the source's sequences
/// (it holds no copy of the source, or another database was given as the target).
pub async fn check_target(src: &Client, tgt: &Client) -> Result<()> {
    let mut missing = Vec::new();
    let seqs = catalog::sequences(src).await?;
    for seq in &seqs {
        let absent: bool = tgt
            .query_one("SELECT to_regclass($1) IS NULL", &[seq])
            .await
            .map_err(|e| query_error(e, &format!("looking for sequence {seq} on the target")))?
            .get(0);
        if absent {
            missing.push(seq.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::usage(format!(
        "the target has no sequence {} ({} of the source's {} missing); nothing was changed",
        missing.iter().take(5).copied().collect::<Vec<_>>().join(", "),
        missing.len(),
        seqs.len()
    ))
    .with_fix("sync-sequences sets the sequences of a copy: run `heroku2rds replicate` first, and check that --target is the database it copied to"))
}

/// Copies every sequence's position from the source to the target. Returns how many were set.
pub async fn sync(src: &Client, tgt: &Client) -> Result<usize> {
    let seqs = catalog::sequences(src).await?;
    for seq in &seqs {
        let row = src
            .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
            .await
            .map_err(|e| query_error(e, &format!("reading sequence {seq} on the source")))?;
        let (last, called): (i64, bool) = (row.get(0), row.get(1));
        tgt.execute(
            &format!("SELECT setval({}::regclass, $1, $2)", quote_literal(seq)),
            &[&last, &called],
        )
        .await
        .map_err(|e| query_error(e, &format!("setting sequence {seq} on the target")))?;
    }
    Ok(seqs.len())
}

/// Refreshes every materialized view on the target, in creation order. Returns how many.
pub async fn refresh_matviews(tgt: &Client) -> Result<usize> {
    let views = catalog::materialized_views(tgt).await?;
    for v in &views {
        tgt.batch_execute(&format!("REFRESH MATERIALIZED VIEW {v}"))
            .await
            .map_err(|e| {
                query_error(
                    e,
                    &format!("refreshing materialized view {v} on the target"),
                )
            })?;
    }
    Ok(views.len())
}
