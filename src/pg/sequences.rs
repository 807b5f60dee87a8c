//! Sequences and materialized views: the objects whose state is not carried by table rows.

use tokio_postgres::Client;

use super::catalog;
use super::conn::{query_error, quote_literal};
use crate::error::Result;

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
