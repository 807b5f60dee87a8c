//! Apply: batches of committed change-log rows are turned into the CURRENT rows of their keys,
//! fetched from the source, written to the target (delete the keys, insert the rows) in one
//! transaction with `session_replication_role = replica`, then deleted from the change log by
//! id. Applying twice is harmless, and a change whose id is smaller but whose transaction commits
//! later is simply picked up by a later batch: nothing is ever checkpointed by id or time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::BytesMut;
use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::Client;

use super::catalog::Table;
use super::conn::{query_error, quote_ident, quote_literal};
use super::store;
use super::verify::ranges;
use crate::error::{Error, Result};

/// What one batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchResult {
    /// Change-log rows consumed.
    pub changes: u64,
    /// Distinct keys rewritten.
    pub keys: u64,
    /// Rows inserted on the target (current rows of those keys).
    pub rows: u64,
    /// Truncates applied.
    pub truncates: u64,
}

/// Renders values as a PostgreSQL array literal of text: `{"a","b\"c",NULL}`.
fn text_array_literal(values: &[&str]) -> String {
    let mut s = String::from("{");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        for ch in v.chars() {
            if ch == '"' || ch == '\\' {
                s.push('\\');
            }
            s.push(ch);
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// `(k1, k2) IN (SELECT u1::t1, u2::t2 FROM unnest(a1, a2) AS u(u1, u2))` with the arrays given as
/// SQL expressions.
pub(crate) fn key_predicate(t: &Table, arrays: &[String]) -> String {
    let cols: Vec<String> = t.key.iter().map(|k| quote_ident(k)).collect();
    let casts: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let ty = t
                .columns
                .iter()
                .find(|c| &c.name == k)
                .map_or("text", |c| c.type_name.as_str());
            format!("u{i}::{ty}")
        })
        .collect();
    let names: Vec<String> = (0..t.key.len()).map(|i| format!("u{i}")).collect();
    format!(
        "({}) IN (SELECT {} FROM unnest({}) AS u({}))",
        cols.join(", "),
        casts.join(", "),
        arrays.join(", "),
        names.join(", ")
    )
}

/// Per-table work of a batch.
#[derive(Default)]
struct TableWork {
    truncate: bool,
    keys: BTreeSet<Vec<String>>,
}

/// Applies one batch of up to `limit` committed changes for the tables in `tables` (by source
/// oid). Returns what was done; `changes == 0` means the log held nothing committed.
pub async fn apply_batch(
    src: &Client,
    tgt: &mut Client,
    tables: &HashMap<u32, Table>,
    limit: i64,
) -> Result<BatchResult> {
    let rows = src
        .query(
            "SELECT id, relid, op, key FROM heroku2rds.changes ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(|e| query_error(e, "reading the change log"))?;
    if rows.is_empty() {
        return Ok(BatchResult::default());
    }
    let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
    let mut work: BTreeMap<u32, TableWork> = BTreeMap::new();
    for r in &rows {
        ids.push(r.get(0));
        let relid: u32 = r.get(1);
        let op: i8 = r.get(2);
        let w = work.entry(relid).or_default();
        if op as u8 == b'T' {
            w.truncate = true;
        } else {
            let key: Vec<Option<String>> = r.get(3);
            let key: Vec<String> = key
                .into_iter()
                .map(|k| {
                    k.ok_or_else(|| {
                        Error::other(
                            "a change-log key holds NULL: the key columns must be NOT NULL",
                        )
                    })
                })
                .collect::<Result<_>>()?;
            w.keys.insert(key);
        }
    }
    let mut result = BatchResult {
        changes: ids.len() as u64,
        ..Default::default()
    };
    let tx = tgt
        .transaction()
        .await
        .map_err(|e| query_error(e, "starting an apply transaction"))?;
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(|e| {
            query_error(e, "setting session_replication_role on the target").with_fix(
                "connect to the target as its master user (RDS: the rds_superuser role can set it)",
            )
        })?;
    // Verification reads the target between applies, never during one (see `verify::ranges`).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ranges::APPLY_LOCK])
        .await
        .map_err(|e| query_error(e, "taking the apply lock on the target"))?;
    for (relid, w) in &work {
        let t = tables.get(relid).ok_or_else(|| {
            Error::other(format!("the change log names table oid {relid}, which is not replicated (dropped or recreated on the source?)"))
                .with_fix("run `heroku2rds replicate` again: the schema guard names what changed")
        })?;
        let name = t.display_name();
        if w.truncate {
            tx.batch_execute(&format!("DELETE FROM ONLY {}", t.qualified()))
                .await
                .map_err(|e| query_error(e, &format!("applying a truncate of {name}")))?;
            tx.execute(ranges::TRUNCATED_SQL, &[relid])
                .await
                .map_err(|e| query_error(e, &format!("applying a truncate of {name}")))?;
            result.truncates += 1;
        }
        if w.keys.is_empty() {
            continue;
        }
        // One text[] per key column.
        let columns: Vec<Vec<&str>> = (0..t.key.len())
            .map(|i| {
                w.keys
                    .iter()
                    .map(|k| k.get(i).map_or("", String::as_str))
                    .collect()
            })
            .collect();
        let params: Vec<String> = (0..t.key.len())
            .map(|i| format!("${}::text[]", i + 1))
            .collect();
        let delete = format!(
            "DELETE FROM ONLY {} WHERE {}",
            t.qualified(),
            key_predicate(t, &params)
        );
        let owned: Vec<Vec<String>> = columns
            .iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = owned
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        tx.execute(&delete, &refs)
            .await
            .map_err(|e| query_error(e, &format!("applying changes to {name}")))?;
        // The keys rewritten are touched: verification compares them again.
        let mut touch = refs.clone();
        touch.push(relid);
        tx.execute(&ranges::touch_sql(t.key.len()), &touch)
            .await
            .map_err(|e| query_error(e, &format!("recording the keys applied to {name}")))?;
        // COPY takes no parameters: the key arrays travel as quoted literals.
        let literals: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::text[]", quote_literal(&text_array_literal(c))))
            .collect();
        let cols = t.copy_columns();
        let out_sql = format!(
            "COPY (SELECT {cols} FROM ONLY {} WHERE {}) TO STDOUT",
            t.qualified(),
            key_predicate(t, &literals)
        );
        let sink = tx
            .copy_in::<_, bytes::Bytes>(&format!("COPY {} ({cols}) FROM STDIN", t.qualified()))
            .await
            .map_err(|e| query_error(e, &format!("applying changes to {name}")))?;
        let stream = src
            .copy_out(&out_sql)
            .await
            .map_err(|e| query_error(e, &format!("fetching changed rows of {name}")))?;
        futures_util::pin_mut!(sink);
        futures_util::pin_mut!(stream);
        let mut buf = BytesMut::new();
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| query_error(e, &format!("fetching changed rows of {name}")))?
        {
            buf.extend_from_slice(&row);
            if buf.len() >= 256 * 1024 {
                sink.send(buf.split().freeze())
                    .await
                    .map_err(|e| query_error(e, &format!("applying changes to {name}")))?;
            }
        }
        if !buf.is_empty() {
            sink.send(buf.split().freeze())
                .await
                .map_err(|e| query_error(e, &format!("applying changes to {name}")))?;
        }
        result.rows += sink
            .finish()
            .await
            .map_err(|e| query_error(e, &format!("applying changes to {name}")))?;
        result.keys += w.keys.len() as u64;
    }
    // The follow row is also what the cutover's switch updates: a batch that commits first
    // makes the switch wait for it; once the switch committed, this updates nothing and the
    // batch is rolled back (see `store::record_switch`).
    let recorded = tx
        .execute(
            "UPDATE heroku2rds.follow SET applied_changes = applied_changes + $1, applied_rows = applied_rows + $2,
                    last_apply_at = now()
              WHERE switched_at IS NULL",
            &[&(result.changes as i64), &(result.rows as i64)],
        )
        .await
        .map_err(|e| query_error(e, "recording apply progress"))?;
    if recorded == 0 {
        drop(tx);
        return Err(store::switched_error(store::switched_at(tgt).await?));
    }
    tx.commit()
        .await
        .map_err(|e| query_error(e, "committing an apply batch"))?;
    // Only now may the log rows go: a crash before this line re-applies them, harmlessly. READ
    // WRITE: during a cutover new sessions on the source start read-only (the write fence).
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    src.batch_execute(&format!(
        "BEGIN READ WRITE; DELETE FROM heroku2rds.changes WHERE id = ANY('{{{list}}}'::bigint[]); COMMIT"
    ))
    .await
    .map_err(|e| query_error(e, "deleting applied changes from the change log"))?;
    Ok(result)
}

/// A difference between the recorded definition of a table and the source's current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// `schema.table`.
    pub table: String,
    /// What changed, in words, naming the column.
    pub what: String,
}

/// Compares recorded definitions with the source's current columns (names, types, generated).
pub async fn schema_changes(
    src: &Client,
    tables: &HashMap<u32, Table>,
) -> Result<Vec<SchemaChange>> {
    let oids: Vec<u32> = tables.keys().copied().collect();
    src.batch_execute("BEGIN READ ONLY; SET LOCAL search_path = pg_catalog")
        .await
        .map_err(|e| query_error(e, "checking the source schema"))?;
    let rows = src
        .query(
            "SELECT c.oid, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated <> ''
               FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE c.oid = ANY($1) ORDER BY c.oid, a.attnum",
            &[&oids],
        )
        .await
        .map_err(|e| query_error(e, "checking the source schema"));
    src.batch_execute("COMMIT")
        .await
        .map_err(|e| query_error(e, "checking the source schema"))?;
    let mut current: HashMap<u32, Vec<(String, String, bool)>> = HashMap::new();
    for r in rows? {
        let entry = current.entry(r.get(0)).or_default();
        if let Some(name) = r.get::<_, Option<String>>(1) {
            entry.push((name, r.get(2), r.get(3)));
        }
    }
    let mut changes = Vec::new();
    for (oid, t) in tables {
        let table = t.display_name();
        let Some(cols) = current.get(oid) else {
            changes.push(SchemaChange {
                table,
                what: "the table was dropped (or recreated) on the source".into(),
            });
            continue;
        };
        for c in &t.columns {
            match cols.iter().find(|x| x.0 == c.name) {
                None => changes.push(SchemaChange {
                    table: table.clone(),
                    what: format!("column \"{}\" was dropped or renamed", c.name),
                }),
                Some(x) if x.1 != c.type_name || x.2 != c.generated => changes.push(SchemaChange {
                    table: table.clone(),
                    what: format!(
                        "column \"{}\" changed type from {} to {}",
                        c.name, c.type_name, x.1
                    ),
                }),
                _ => {}
            }
        }
        for x in cols
            .iter()
            .filter(|x| !t.columns.iter().any(|c| c.name == x.0))
        {
            changes.push(SchemaChange {
                table: table.clone(),
                what: format!("column \"{}\" ({}) was added", x.0, x.1),
            });
        }
    }
    changes.sort_by(|a, b| (&a.table, &a.what).cmp(&(&b.table, &b.what)));
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_escape_quotes_and_backslashes() {
        assert_eq!(
            text_array_literal(&["a", "b\"c", "d\\e", "", "NULL", "x,y", "{z}"]),
            r#"{"a","b\"c","d\\e","","NULL","x,y","{z}"}"#
        );
    }
}
