//! Parallel chunked copy: plan chunks per table (pure), then N workers with their own source and
//! target connections pull chunks largest-first. Each chunk is one `COPY ... TO STDOUT` streamed
//! into `COPY ... FROM STDIN` inside one target transaction that also marks the chunk done: a
//! chunk is either fully there and recorded, or not at all.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use futures_util::{SinkExt, TryStreamExt};

use super::catalog::Table;
use super::conn::{query_error, quote_ident, ConnSpec};
use super::pool;
use crate::cancel::Cancel;
use crate::error::{Error, Result};

/// How a chunk selects its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The whole table.
    Whole,
    /// `key >= lo AND key < hi` on a single integer key; open ends are None.
    Int { lo: Option<i64>, hi: Option<i64> },
    /// `ctid >= '(lo,0)' AND ctid < '(hi,0)'` page ranges (TID range scans, PostgreSQL >= 14).
    Ctid { lo: Option<i64>, hi: Option<i64> },
}

impl Range {
    /// Stored kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Range::Whole => "whole",
            Range::Int { .. } => "int",
            Range::Ctid { .. } => "ctid",
        }
    }

    /// Rebuilds a range from its stored form.
    pub fn from_stored(kind: &str, lo: Option<i64>, hi: Option<i64>) -> Result<Self> {
        Ok(match kind {
            "whole" => Range::Whole,
            "int" => Range::Int { lo, hi },
            "ctid" => Range::Ctid { lo, hi },
            other => {
                return Err(Error::other(format!(
                    "unknown chunk kind `{other}` in heroku2rds.chunks"
                )))
            }
        })
    }

    /// Stored bounds.
    pub fn bounds(&self) -> (Option<i64>, Option<i64>) {
        match *self {
            Range::Whole => (None, None),
            Range::Int { lo, hi } | Range::Ctid { lo, hi } => (lo, hi),
        }
    }

    /// The WHERE clause selecting this range (`true` for the whole table).
    pub fn predicate(&self, key: Option<&str>) -> String {
        let mut parts = Vec::new();
        match (*self, key) {
            (Range::Int { lo, hi }, Some(k)) => {
                let k = quote_ident(k);
                if let Some(lo) = lo {
                    parts.push(format!("{k} >= {lo}"));
                }
                if let Some(hi) = hi {
                    parts.push(format!("{k} < {hi}"));
                }
            }
            (Range::Ctid { lo, hi }, _) => {
                if let Some(lo) = lo {
                    parts.push(format!("ctid >= '({lo},0)'::tid"));
                }
                if let Some(hi) = hi {
                    parts.push(format!("ctid < '({hi},0)'::tid"));
                }
            }
            _ => {}
        }
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" AND ")
        }
    }
}

/// Inputs of chunk planning for one table.
#[derive(Debug, Clone, Copy)]
pub struct SplitInput {
    /// Table size in bytes.
    pub bytes: i64,
    /// Heap pages.
    pub pages: i64,
    /// Min and max of the single integer key, when the table has one and is not empty.
    pub int_key_range: Option<(i64, i64)>,
    /// Whether TID range scans are available (source >= 14).
    pub tid_range_scans: bool,
}

/// Splits a table into ranges of about `chunk_bytes`. Pure. The first and last ranges are open
/// so that rows beyond the bounds seen at planning time are still copied.
pub fn split(input: SplitInput, chunk_bytes: i64) -> Vec<Range> {
    let n = (input.bytes / chunk_bytes.max(1) + 1).clamp(1, 100_000);
    if n <= 1 {
        return vec![Range::Whole];
    }
    if let Some((min, max)) = input.int_key_range {
        let span = (max as i128) - (min as i128) + 1;
        let n = (n as i128).min(span).max(1);
        if n <= 1 {
            return vec![Range::Whole];
        }
        let width = (span + n - 1) / n;
        return (0..n)
            .map(|i| {
                let lo = (i > 0).then(|| (min as i128 + i * width) as i64);
                let hi = (i < n - 1).then(|| (min as i128 + (i + 1) * width) as i64);
                Range::Int { lo, hi }
            })
            .collect();
    }
    if input.tid_range_scans && input.pages > 1 {
        let n = n.min(input.pages);
        let per = (input.pages + n - 1) / n;
        let n = (input.pages + per - 1) / per;
        return (0..n)
            .map(|i| Range::Ctid {
                lo: (i > 0).then_some(i * per),
                hi: (i < n - 1).then_some((i + 1) * per),
            })
            .collect();
    }
    vec![Range::Whole]
}

/// A unit of copy work, as stored in `heroku2rds.chunks`.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// State id of the table.
    pub table_id: i32,
    /// Chunk number within the table.
    pub chunk_no: i32,
    /// Rows it selects.
    pub range: Range,
    /// Estimated size, for ordering and ETA.
    pub est_bytes: i64,
}

/// Totals of a copy run.
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyTotals {
    /// Chunks copied by this run.
    pub chunks: u64,
    /// Rows copied by this run.
    pub rows: u64,
    /// Bytes of COPY text copied by this run.
    pub bytes: u64,
}

const FLUSH_BYTES: usize = 256 * 1024;

/// Copies one chunk: source COPY out streamed into target COPY in, plus the chunk's done mark, in
/// one target transaction.
pub async fn copy_chunk(
    src: &tokio_postgres::Client,
    tgt: &mut tokio_postgres::Client,
    table: &Table,
    chunk: &Chunk,
) -> Result<(u64, u64)> {
    let name = table.display_name();
    let key = table.integer_key.then(|| table.key[0].as_str());
    let tx = tgt
        .transaction()
        .await
        .map_err(|e| query_error(e, "starting a target transaction"))?;
    let (rows, bytes) = stream_rows(src, &tx, table, &chunk.range.predicate(key)).await?;
    let marked = tx
        .execute(
            "UPDATE heroku2rds.chunks SET done_at = clock_timestamp(), rows = $3, bytes = $4
              WHERE table_id = $1 AND chunk_no = $2 AND done_at IS NULL",
            &[
                &chunk.table_id,
                &chunk.chunk_no,
                &(rows as i64),
                &(bytes as i64),
            ],
        )
        .await
        .map_err(|e| query_error(e, "recording a copied chunk"))?;
    if marked != 1 {
        // Someone else finished this chunk: drop our copy of it.
        tx.rollback()
            .await
            .map_err(|e| query_error(e, "rolling back a duplicate chunk"))?;
        return Ok((0, 0));
    }
    tx.commit()
        .await
        .map_err(|e| query_error(e, &format!("committing a chunk of {name}")))?;
    Ok((rows, bytes))
}

/// Streams the rows of `table` selected by `predicate` from the source into the table on the
/// target, inside the caller's transaction. Returns (rows, bytes of COPY text).
async fn stream_rows(
    src: &tokio_postgres::Client,
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
    predicate: &str,
) -> Result<(u64, u64)> {
    let name = table.display_name();
    let cols = table.copy_columns();
    let out_sql = format!(
        "COPY (SELECT {cols} FROM ONLY {} WHERE {predicate}) TO STDOUT",
        table.qualified(),
    );
    let in_sql = format!("COPY {} ({cols}) FROM STDIN", table.qualified());
    let sink = tx
        .copy_in::<_, bytes::Bytes>(&in_sql)
        .await
        .map_err(|e| query_error(e, &format!("COPY into {name}")))?;
    let stream = src
        .copy_out(&out_sql)
        .await
        .map_err(|e| query_error(e, &format!("COPY out of {name}")))?;
    futures_util::pin_mut!(sink);
    futures_util::pin_mut!(stream);
    let mut buf = BytesMut::with_capacity(FLUSH_BYTES * 2);
    let mut bytes = 0u64;
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| query_error(e, &format!("reading {name} from the source")))?
    {
        bytes += row.len() as u64;
        buf.extend_from_slice(&row);
        if buf.len() >= FLUSH_BYTES {
            sink.send(buf.split().freeze())
                .await
                .map_err(|e| query_error(e, &format!("writing {name} to the target")))?;
        }
    }
    if !buf.is_empty() {
        sink.send(buf.split().freeze())
            .await
            .map_err(|e| query_error(e, &format!("writing {name} to the target")))?;
    }
    let rows = sink
        .finish()
        .await
        .map_err(|e| query_error(e, &format!("finishing COPY into {name}")))?;
    Ok((rows, bytes))
}

/// Copies a whole table again (tables without a key, `--keyless recopy`, at cutover with writes
/// stopped): its rows on the target are replaced by the source's in one transaction.
pub async fn recopy_table(
    src: &tokio_postgres::Client,
    tgt: &mut tokio_postgres::Client,
    table: &Table,
) -> Result<u64> {
    let tx = tgt
        .transaction()
        .await
        .map_err(|e| query_error(e, "starting a target transaction"))?;
    // As apply: the rows are the source's, so the target's triggers and foreign-key checks
    // must not fire on them.
    tx.batch_execute(&format!(
        "SET LOCAL session_replication_role = replica; DELETE FROM ONLY {}",
        table.qualified()
    ))
    .await
    .map_err(|e| {
        query_error(
            e,
            &format!("emptying {} on the target", table.display_name()),
        )
    })?;
    let (rows, _) = stream_rows(src, &tx, table, "true").await?;
    tx.commit().await.map_err(|e| {
        query_error(
            e,
            &format!("committing the copy of {}", table.display_name()),
        )
    })?;
    Ok(rows)
}

/// Runs `jobs` workers over `chunks` (largest tables, by rows, first). Stops all workers after their
/// current chunk when one fails or when `cancel` is set; returns the first error.
pub async fn copy_all(
    source: &ConnSpec,
    target: &ConnSpec,
    tables: Arc<std::collections::HashMap<i32, Table>>,
    mut chunks: Vec<Chunk>,
    jobs: usize,
    cancel: Cancel,
    table_done: tokio::sync::mpsc::UnboundedSender<i32>,
) -> Result<CopyTotals> {
    // Chunks left per table: when a table's count reaches zero, its id goes to `table_done` so
    // that its indexes can be built while other tables still copy.
    let mut left: std::collections::HashMap<i32, usize> = std::collections::HashMap::new();
    for c in &chunks {
        *left.entry(c.table_id).or_default() += 1;
    }
    let left = Arc::new(Mutex::new(left));
    // Table by table, the table with the most rows first: its indexes, the slowest to build,
    // are then built while the other tables still copy, and the tables copied last are those
    // whose indexes build fastest.
    let rows = |id: &i32| tables.get(id).map_or(0, |t| t.est_rows);
    chunks.sort_by(|a, b| {
        rows(&b.table_id)
            .cmp(&rows(&a.table_id))
            .then(b.est_bytes.cmp(&a.est_bytes))
            .then(a.table_id.cmp(&b.table_id))
            .then(a.chunk_no.cmp(&b.chunk_no))
    });
    let started = Instant::now();
    let jobs = jobs.max(1).min(chunks.len().max(1));
    let worker_ids = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let per_worker = pool::run(chunks, jobs, &cancel, |queue| {
        let (left, table_done) = (left.clone(), table_done.clone());
        let (source, target, tables) = (source.clone(), target.clone(), tables.clone());
        let worker = worker_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let mut totals = CopyTotals::default();
            let src = source.connect().await?;
            let mut tgt = target.connect().await?;
            while let Some(chunk) = queue.next() {
                let table = tables
                    .get(&chunk.table_id)
                    .ok_or_else(|| Error::other("chunk of an unknown table"))?;
                let t0 = Instant::now();
                let (rows, bytes) = copy_chunk(&src, &mut tgt, table, &chunk).await?;
                totals.chunks += 1;
                totals.rows += rows;
                totals.bytes += bytes;
                let finished = {
                    let mut left = left
                        .lock()
                        .map_err(|_| Error::other("chunk counts poisoned"))?;
                    let n = left.entry(chunk.table_id).or_insert(1);
                    *n -= 1;
                    *n == 0
                };
                if finished {
                    // The receiver may be gone (early index builds failed): the copy goes on.
                    let _ = table_done.send(chunk.table_id);
                }
                tracing::info!(
                    worker,
                    "copied {} chunk {} ({} rows, {:.1} MB) in {:.1}s",
                    table.display_name(),
                    chunk.chunk_no,
                    rows,
                    bytes as f64 / 1e6,
                    t0.elapsed().as_secs_f64()
                );
            }
            Ok(totals)
        }
    })
    .await?;
    let mut totals = CopyTotals::default();
    for t in per_worker {
        totals.chunks += t.chunks;
        totals.rows += t.rows;
        totals.bytes += t.bytes;
    }
    if cancel.is_cancelled() {
        return Err(Error::other(
            "interrupted; completed chunks are kept: re-run the same command to resume",
        ));
    }
    let secs = started.elapsed().as_secs_f64().max(0.001);
    tracing::info!(
        "copied {} chunks, {} rows, {:.1} MB in {:.1}s ({:.1} MB/s)",
        totals.chunks,
        totals.rows,
        totals.bytes as f64 / 1e6,
        secs,
        totals.bytes as f64 / 1e6 / secs
    );
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: i64 = 1 << 20;

    fn covers_all_integers(ranges: &[Range], probes: &[i64]) {
        for &p in probes {
            let n = ranges
                .iter()
                .filter(|r| match r {
                    Range::Whole => true,
                    Range::Int { lo, hi } => lo.is_none_or(|l| p >= l) && hi.is_none_or(|h| p < h),
                    Range::Ctid { .. } => false,
                })
                .count();
            assert_eq!(n, 1, "value {p} is in {n} ranges of {ranges:?}");
        }
    }

    #[test]
    fn small_tables_are_one_chunk() {
        let r = split(
            SplitInput {
                bytes: MB,
                pages: 128,
                int_key_range: Some((1, 1000)),
                tid_range_scans: true,
            },
            32 * MB,
        );
        assert_eq!(r, vec![Range::Whole]);
    }

    #[test]
    fn integer_ranges_partition_every_value_with_open_ends() {
        let r = split(
            SplitInput {
                bytes: 100 * MB,
                pages: 12800,
                int_key_range: Some((-5, 1_000_003)),
                tid_range_scans: true,
            },
            32 * MB,
        );
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].bounds().0, None);
        assert_eq!(r[3].bounds().1, None);
        covers_all_integers(
            &r,
            &[
                i64::MIN,
                -6,
                -5,
                0,
                250_000,
                250_001,
                999_999,
                1_000_003,
                i64::MAX,
            ],
        );
    }

    #[test]
    fn extreme_integer_keys_do_not_overflow() {
        let r = split(
            SplitInput {
                bytes: 1000 * MB,
                pages: 1,
                int_key_range: Some((i64::MIN, i64::MAX)),
                tid_range_scans: false,
            },
            32 * MB,
        );
        assert!(r.len() > 10);
        covers_all_integers(&r, &[i64::MIN, -1, 0, 1, i64::MAX]);
    }

    #[test]
    fn few_distinct_keys_limit_the_chunks() {
        let r = split(
            SplitInput {
                bytes: 1000 * MB,
                pages: 1000,
                int_key_range: Some((7, 9)),
                tid_range_scans: true,
            },
            32 * MB,
        );
        assert_eq!(r.len(), 3);
        covers_all_integers(&r, &[6, 7, 8, 9, 10]);
        let one = split(
            SplitInput {
                bytes: 1000 * MB,
                pages: 1000,
                int_key_range: Some((7, 7)),
                tid_range_scans: true,
            },
            32 * MB,
        );
        assert_eq!(one, vec![Range::Whole]);
    }

    #[test]
    fn ctid_ranges_cover_every_page() {
        let r = split(
            SplitInput {
                bytes: 100 * MB,
                pages: 12_801,
                int_key_range: None,
                tid_range_scans: true,
            },
            32 * MB,
        );
        assert_eq!(r.len(), 4);
        let mut next = None;
        for c in &r {
            let (lo, hi) = c.bounds();
            assert_eq!(lo, next);
            next = hi;
        }
        assert_eq!(next, None);
        assert_eq!(
            r[1].predicate(None),
            "ctid >= '(3201,0)'::tid AND ctid < '(6402,0)'::tid"
        );
    }

    #[test]
    fn without_tid_range_scans_non_integer_keys_copy_whole() {
        let r = split(
            SplitInput {
                bytes: 100 * MB,
                pages: 12_800,
                int_key_range: None,
                tid_range_scans: false,
            },
            32 * MB,
        );
        assert_eq!(r, vec![Range::Whole]);
    }

    #[test]
    fn predicates_quote_the_key() {
        let r = Range::Int {
            lo: Some(10),
            hi: Some(20),
        };
        assert_eq!(
            r.predicate(Some("order")),
            "\"order\" >= 10 AND \"order\" < 20"
        );
        assert_eq!(Range::Whole.predicate(None), "true");
    }
}
