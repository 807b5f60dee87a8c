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
/// Materialized views and whether each can be refreshed CONCURRENTLY (it has a unique index
/// over plain columns, with no WHERE clause), in creation order.
pub async fn matviews_concurrently(tgt: &Client) -> Result<Vec<(String, bool)>> {
    let rows = tgt
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname),
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
                             AND i.indpred IS NULL AND i.indexprs IS NULL)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'm' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'heroku2rds')
              ORDER BY c.oid",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing materialized views"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// After the switch: refreshes every materialized view again, CONCURRENTLY where a unique
/// index allows it (readers are not blocked), plainly otherwise (readers of that view wait for
/// it). Failures are reported, not raised: the switch is done. Returns (concurrently, plainly).
pub async fn refresh_matviews_after_switch(tgt: &Client) -> (usize, usize) {
    let views = match matviews_concurrently(tgt).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("after the switch: {e:#}; refresh the materialized views yourself");
            return (0, 0);
        }
    };
    let (mut conc, mut plain) = (0, 0);
    for (v, concurrently) in views {
        let sql = if concurrently {
            format!("REFRESH MATERIALIZED VIEW CONCURRENTLY {v}")
        } else {
            format!("REFRESH MATERIALIZED VIEW {v}")
        };
        match tgt.batch_execute(&sql).await {
            Ok(()) if concurrently => conc += 1,
            Ok(()) => plain += 1,
            Err(e) => tracing::warn!(
                "after the switch: refreshing {v} failed ({}); run `{sql}` on the target",
                crate::pg::conn::query_error(e, "refreshing")
            ),
        }
    }
    (conc, plain)
}

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
