//! Post-data: indexes, constraints and triggers built on the target after (or, for indexes the
//! apply needs, during) the copy, in parallel waves, each item recorded in its own transaction;
//! foreign keys validated once the target has caught up.

use super::*;

/// The post-data script's preamble, its items not yet built, and how many are built.
pub(super) async fn pending_items(
    tgt: &Client,
    script: &str,
) -> Result<(String, Vec<PostDataItem>, usize)> {
    let (preamble, items) = schema::split_post_data(script);
    let done: std::collections::HashSet<i32> = tgt
        .query("SELECT ordinal FROM heroku2rds.schema_items", &[])
        .await
        .map_err(|e| query_error(e, "reading built schema items"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let todo = items
        .into_iter()
        .filter(|i| !done.contains(&i.ordinal))
        .collect();
    Ok((preamble, todo, done.len()))
}

/// Builds the post-data items not yet built, in waves, `jobs` at a time.
///
/// The copy is not one snapshot: rows changed between chunks can be on the target twice (an
/// updated row copied from two pages) or refer to rows deleted since (a cascade), until the
/// change log is applied. So a unique index that meets a duplicate triggers one pass of apply
/// over the logged changes and is retried, and foreign keys are added NOT VALID (enforced for new
/// rows) and validated once the target has caught up.
pub(super) async fn post_data(
    source: &ConnSpec,
    target: &ConnSpec,
    tgt: &Client,
    script: &str,
    opts: &Options,
    jobs: usize,
    cancel: Cancel,
) -> Result<()> {
    let (preamble, todo, built) = pending_items(tgt, script).await?;
    tracing::info!(
        "building {} index(es), constraint(s) and trigger(s) ({built} already built)",
        todo.len()
    );
    for wave in 0..=2u8 {
        let mut batch: Vec<PostDataItem> =
            todo.iter().filter(|i| i.wave() == wave).cloned().collect();
        for round in 0..4 {
            if batch.is_empty() {
                break;
            }
            let duplicates = build_items(target, &preamble, batch, jobs, cancel.clone()).await?;
            if duplicates.is_empty() {
                break;
            }
            if round == 3 {
                return Err(Error::other(format!(
                    "{} still meets duplicate rows after applying the change log three times",
                    duplicates[0].label()
                )));
            }
            tracing::info!(
                "{} index(es) met rows changed during the copy; applying the change log before retrying",
                duplicates.len()
            );
            drain_changes(source, target, opts).await?;
            batch = duplicates;
        }
    }
    Ok(())
}

/// Builds the indexes and key constraints of each table as soon as all its chunks are copied,
/// while other tables still copy (up to `jobs` at a time). Items that meet duplicate rows (rows
/// changed during the copy) are left for the post-data phase, which applies the change log first.
pub(super) async fn early_indexes(
    target: &ConnSpec,
    tgt: &Client,
    script: &str,
    tables: Arc<HashMap<i32, Table>>,
    mut ready: tokio::sync::mpsc::UnboundedReceiver<i32>,
    jobs: usize,
    cancel: Cancel,
) -> Result<()> {
    let (preamble, todo, _) = pending_items(tgt, script).await?;
    let mut by_table: HashMap<(String, String), Vec<PostDataItem>> = HashMap::new();
    for item in todo.into_iter().filter(|i| i.wave() == 0) {
        if let Some(t) = schema::item_table(&item) {
            by_table.entry(t).or_default().push(item);
        }
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = JoinSet::new();
    while let Some(id) = ready.recv().await {
        let Some(t) = tables.get(&id) else { continue };
        for item in by_table
            .remove(&(t.schema.clone(), t.name.clone()))
            .unwrap_or_default()
        {
            let (target, preamble, permits, cancel) = (
                target.clone(),
                preamble.clone(),
                permits.clone(),
                cancel.clone(),
            );
            set.spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::other("index pool closed"))?;
                if cancel.is_cancelled() {
                    return Ok(());
                }
                let mut client = target.connect().await?;
                client
                    .batch_execute(&preamble)
                    .await
                    .map_err(|e| query_error(e, "preparing an index session"))?;
                if build_item(&mut client, &item).await? != Built::Done {
                    tracing::debug!(
                        "{} met rows changed during the copy; left for post-data",
                        item.label()
                    );
                    return Ok(());
                }
                tracing::info!("built {} while copying", item.label());
                Ok(())
            });
        }
    }
    join_all(set).await
}

/// How building one post-data item ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Built {
    /// Built and recorded, in one transaction.
    Done,
    /// A unique or exclusion constraint met duplicate rows (rolled back).
    Duplicate,
    /// Deadlocked with another item (rolled back).
    Deadlock,
}

/// Builds one item and records it in the same transaction.
pub(super) async fn build_item(client: &mut Client, item: &PostDataItem) -> Result<Built> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| query_error(e, "starting a post-data transaction"))?;
    if let Err(e) = tx.batch_execute(&item.sql_to_run()).await {
        let code = e.code().cloned();
        drop(tx);
        return match code {
            Some(c) if c == SqlState::UNIQUE_VIOLATION || c == SqlState::EXCLUSION_VIOLATION => {
                Ok(Built::Duplicate)
            }
            Some(c) if c == SqlState::T_R_DEADLOCK_DETECTED => Ok(Built::Deadlock),
            _ => Err(query_error(e, &format!("building {}", item.label()))),
        };
    }
    tx.execute(
        "INSERT INTO heroku2rds.schema_items (ordinal, object_type, header) VALUES ($1, $2, $3)",
        &[&item.ordinal, &item.object_type, &item.header],
    )
    .await
    .map_err(|e| query_error(e, "recording a built schema item"))?;
    tx.commit()
        .await
        .map_err(|e| query_error(e, &format!("committing {}", item.label())))?;
    Ok(Built::Done)
}

/// Builds items in parallel; returns those that failed on duplicate keys (to retry after apply).
pub(super) async fn build_items(
    target: &ConnSpec,
    preamble: &str,
    items: Vec<PostDataItem>,
    jobs: usize,
    cancel: Cancel,
) -> Result<Vec<PostDataItem>> {
    // (item, deadlocks met so far): foreign keys built in parallel lock both tables and can
    // deadlock each other; the loser goes to the back of the queue. Taken from the end, as the
    // caller ordered them.
    let queued = items.into_iter().rev().map(|i| (i, 0u8));
    let preamble = preamble.to_string();
    let per_worker = pool::run(queued, jobs, &cancel, |queue| {
        let (target, preamble) = (target.clone(), preamble.clone());
        async move {
            let mut duplicates = Vec::new();
            let mut client = target.connect().await?;
            client
                .batch_execute(&preamble)
                .await
                .map_err(|e| query_error(e, "preparing a post-data session"))?;
            while let Some((item, deadlocks)) = queue.next() {
                match build_item(&mut client, &item).await? {
                    Built::Done => tracing::debug!("built {}", item.label()),
                    Built::Deadlock if deadlocks < 5 => {
                        tracing::debug!("deadlock building {}; retrying", item.label());
                        queue.put_back((item, deadlocks + 1));
                    }
                    Built::Deadlock => {
                        return Err(Error::other(format!(
                            "building {}: deadlocked five times",
                            item.label()
                        )))
                    }
                    Built::Duplicate => duplicates.push(item),
                }
            }
            Ok(duplicates)
        }
    })
    .await?;
    if cancel.is_cancelled() {
        return Err(Error::other(
            "interrupted; built items are kept: re-run the same command to resume",
        ));
    }
    Ok(per_worker.into_iter().flatten().collect())
}

/// Applies every change committed when it starts (until a batch comes back short). Not until the
/// log is empty: under a steady write load it never is, and the rows copied twice that made an
/// index fail were all logged before the build was tried.
pub(super) async fn drain_changes(
    source: &ConnSpec,
    target: &ConnSpec,
    opts: &Options,
) -> Result<apply::BatchResult> {
    let src = source.connect().await?;
    let mut tgt = target.connect().await?;
    let tables = replicated_tables(&tgt).await?;
    let mut total = apply::BatchResult::default();
    loop {
        let r = apply::apply_batch(&src, &mut tgt, &tables, opts.batch).await?;
        total.changes += r.changes;
        if r.changes < opts.batch.max(1) as u64 {
            return Ok(total);
        }
    }
}

/// Validates foreign keys added NOT VALID during post-data. Returns how many are still not
/// valid (rows changed during the copy not yet applied, or writes still running).
pub async fn validate_foreign_keys(tgt: &Client) -> Result<usize> {
    let rows = tgt
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(k.conname)
               FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE k.contype = 'f' AND NOT k.convalidated AND n.nspname <> 'heroku2rds'",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing foreign keys to validate"))?;
    let mut left = 0;
    for r in &rows {
        let (table, name): (String, String) = (r.get(0), r.get(1));
        if let Err(e) = tgt
            .batch_execute(&format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}"))
            .await
        {
            if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                left += 1;
                continue;
            }
            return Err(query_error(e, &format!("validating {name} on {table}")));
        }
    }
    if left > 0 {
        tracing::info!(
            "{left} foreign key(s) stay NOT VALID until the target catches up with writes stopped"
        );
    }
    Ok(left)
}

/// Runs independent statements on the target, `jobs` at a time.
pub(super) async fn run_statements(
    target: &ConnSpec,
    jobs: usize,
    statements: Vec<String>,
    cancel: Cancel,
) -> Result<()> {
    // Taken from the end, as before the pool: the statements' order is the caller's.
    pool::run(statements.into_iter().rev(), jobs, &cancel, |queue| {
        let target = target.clone();
        async move {
            let client = target.connect().await?;
            while let Some(sql) = queue.next() {
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| query_error(e, &sql))?;
            }
            Ok(())
        }
    })
    .await?;
    if cancel.is_cancelled() {
        return Err(Error::other("interrupted"));
    }
    Ok(())
}
