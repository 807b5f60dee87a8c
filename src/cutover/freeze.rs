//! The write freeze, before the point of no return: formation saved, maintenance on, dynos
//! stopped, sessions ended, the change log drained, sequences synced, the final verification.
//! Everything here is undone by [`super::rollback`].

use super::*;

/// The pre-point-of-no-return part: everything here is undone by [`rollback`].
pub(super) struct Freeze<'a> {
    pub(super) app: &'a App<'a>,
    pub(super) tgt: &'a Client,
    pub(super) src: &'a Client,
    pub(super) source: &'a ConnSpec,
    pub(super) opts: &'a Options,
    pub(super) id: i32,
    pub(super) formation: &'a [Process],
    pub(super) maintenance_before: bool,
    pub(super) db: &'a Database,
    pub(super) cancel: &'a Cancel,
    pub(super) sink: &'a dyn Sink,
}

impl Freeze<'_> {
    async fn record(&self, step: Step, detail: Option<serde_json::Value>) -> Result<f64> {
        let at =
            store::record_cutover_step(self.tgt, self.id, step.as_str(), detail.as_ref()).await?;
        tracing::info!("cutover: {}", step.as_str());
        self.sink.info("cutover", format!("step {}", step.as_str()));
        Ok(at)
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::other(
                "interrupted (Ctrl-C/SIGTERM) before the point of no return",
            ));
        }
        Ok(())
    }

    pub(super) async fn run(&self) -> Result<()> {
        let opts = self.opts;
        if !self.maintenance_before {
            self.app.set_maintenance(true).await?;
        }
        self.record(Step::MaintenanceOn, None).await?;
        self.check_cancel()?;

        let zero: Vec<Process> = self
            .formation
            .iter()
            .filter(|p| p.quantity != 0)
            .map(|p| Process {
                quantity: 0,
                ..p.clone()
            })
            .collect();
        self.app.scale(&zero).await?;
        self.record(Step::ScaledDown, None).await?;

        let deadline = Instant::now() + opts.dyno_timeout;
        let mut stopped: BTreeSet<String> = BTreeSet::new();
        loop {
            let running: Vec<Dyno> = self
                .app
                .dynos()
                .await?
                .into_iter()
                .filter(|d| d.may_run())
                .collect();
            if running.is_empty() {
                break;
            }
            for d in &running {
                let in_formation = self
                    .formation
                    .iter()
                    .any(|p| p.process_type == d.process_type);
                if !in_formation && stopped.insert(d.id.clone()) {
                    tracing::info!("stopping one-off dyno {}", d.name);
                    self.app.stop_dyno(d).await?;
                }
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = running.iter().map(|d| d.name.as_str()).collect();
                return Err(Error::other(format!(
                    "dynos still running {}s after scaling to 0: {}",
                    opts.dyno_timeout.as_secs(),
                    names.join(", ")
                )));
            }
            self.check_cancel()?;
            let _ = self.cancel.sleep(opts.poll).await;
        }
        self.record(Step::DynosStopped, None).await?;
        self.check_cancel()?;

        let terminated = self.end_sessions().await?;
        let freeze_at = self
            .record(
                Step::SessionsEnded,
                Some(serde_json::json!({ "terminated": terminated })),
            )
            .await?;
        self.check_cancel()?;

        let changes = apply::schema_changes(self.src, &captured_tables(self.tgt).await?).await?;
        if let Some(c) = changes.first() {
            return Err(Error::new(
                Kind::Blocked,
                format!("schema change on the source: {}: {}", c.table, c.what),
            ));
        }
        let applied = self.drain(freeze_at).await?;
        self.record(
            Step::Drained,
            Some(serde_json::json!({ "applied_changes": applied })),
        )
        .await?;
        self.check_cancel()?;

        let mut tgt = opts.target.connect().await?;
        let mut recopied = Vec::new();
        for t in tables_with_mode(self.tgt, "recopy").await? {
            let rows = copy::recopy_table(self.src, &mut tgt, &t).await?;
            tracing::info!("copied {} again ({rows} rows)", t.display_name());
            recopied.push(t.display_name());
        }
        self.record(
            Step::KeylessRecopied,
            Some(serde_json::json!({ "tables": recopied })),
        )
        .await?;
        self.check_cancel()?;

        let n = sequences::sync(self.src, self.tgt).await?;
        let left = replicate::validate_foreign_keys(self.tgt).await?;
        if left > 0 {
            return Err(Error::new(
                Kind::Differences,
                format!("{left} foreign key(s) on the target do not validate with writes stopped"),
            )
            .with_fix("run `heroku2rds verify` to find the differing rows"));
        }
        self.record(
            Step::SequencesSynced,
            Some(serde_json::json!({ "sequences": n })),
        )
        .await?;
        let m = sequences::refresh_matviews(self.tgt).await?;
        self.record(
            Step::MatviewsRefreshed,
            Some(serde_json::json!({ "views": m })),
        )
        .await?;
        self.check_cancel()?;

        let report = verify::run(self.source, &opts.target, opts.jobs.max(1), self.sink).await?;
        if !report.equal {
            let bad: Vec<String> = report
                .tables
                .iter()
                .filter(|t| !t.equal())
                .map(|t| {
                    format!(
                        "{} ({} rows on the source, {} on the target, {} differing row(s){})",
                        t.table,
                        t.source_rows,
                        t.target_rows,
                        t.differences_found,
                        t.error
                            .as_deref()
                            .map(|e| format!(", {e}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            return Err(Error::new(
                Kind::Differences,
                format!("the final verification found differences: {}", bad.join("; ")),
            )
            .with_fix("run `heroku2rds verify --json` for the differing keys; fix the target, then run cutover again"));
        }
        self.record(
            Step::Verified,
            Some(serde_json::json!({ "tables": report.tables.len() })),
        )
        .await?;
        self.check_cancel()?;

        let attachments = self.app.attachments().await?;
        let exists = attachments
            .iter()
            .any(|a| a.name == PREVIOUS_ATTACHMENT && a.addon.id == self.db.addon.id);
        if !exists {
            self.app
                .attach(&self.db.addon.id, PREVIOUS_ATTACHMENT)
                .await?;
        }
        self.record(Step::PreviousAttached, None).await?;
        self.check_cancel()
    }

    /// Waits for the app's sessions on the source to end, then terminates the rest. Returns how
    /// many were terminated.
    async fn end_sessions(&self) -> Result<usize> {
        const OTHERS: &str = "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND backend_type = 'client backend' AND application_name NOT LIKE 'heroku2rds%'";
        let deadline = Instant::now() + self.opts.session_grace;
        loop {
            let pids: Vec<i32> = self
                .src
                .query(OTHERS, &[])
                .await
                .map_err(|e| query_error(e, "listing sessions on the source"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if pids.is_empty() {
                return Ok(0);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "{} session(s) still on the source after {}s: terminating them",
                    pids.len(),
                    self.opts.session_grace.as_secs()
                );
                let mut n = 0;
                for pid in &pids {
                    let ok: bool = self
                        .src
                        .query_one("SELECT pg_terminate_backend($1)", &[pid])
                        .await
                        .map_err(|e| query_error(e, "terminating a session on the source"))?
                        .get(0);
                    n += usize::from(ok);
                }
                // Terminated sessions take a moment to go.
                for _ in 0..50 {
                    let left = self
                        .src
                        .query(OTHERS, &[])
                        .await
                        .map_err(|e| query_error(e, "listing sessions on the source"))?
                        .len();
                    if left == 0 {
                        return Ok(n);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return Err(Error::other(
                    "sessions of other clients stay connected to the source after being terminated",
                ));
            }
            self.check_cancel()?;
            let _ = self
                .cancel
                .sleep(self.opts.poll.min(Duration::from_millis(500)))
                .await;
        }
    }

    /// Empties the change log: applies it ourselves when no follower runs, else waits for the
    /// follower. Returns the changes this process applied.
    async fn drain(&self, freeze_at: f64) -> Result<u64> {
        let lock = RunnerLock::try_acquire(self.opts.target.connect().await?, "cutover").await?;
        if lock.is_some() {
            let tables = captured_tables(self.tgt).await?;
            let mut tgt = self.opts.target.connect().await?;
            let mut total = 0;
            loop {
                let r = apply::apply_batch(self.src, &mut tgt, &tables, 5000).await?;
                total += r.changes;
                if r.changes == 0 {
                    return Ok(total);
                }
                self.check_cancel()?;
            }
        }
        tracing::info!(
            "a replicate process follows this target: waiting for it to empty the change log"
        );
        let deadline = Instant::now() + self.opts.drain_timeout;
        loop {
            let backlog: i64 = self
                .src
                .query_one("SELECT count(*) FROM heroku2rds.changes", &[])
                .await
                .map_err(|e| query_error(e, "reading the change log"))?
                .get(0);
            let r = store::follow_report(self.tgt).await?.ok_or_else(|| {
                Error::other("reading the follower's progress: the follower never reported")
            })?;
            let (updated, caught_up, stopped) = (r.updated_at, r.caught_up, r.stopped_reason);
            if let Some(s) = stopped.filter(|s| s != "interrupted") {
                return Err(Error::other(format!("the follower stopped applying: {s}")));
            }
            // An empty log seen after the freeze means every change was applied and committed
            // on the target (log rows are deleted only after their apply commits); the
            // follower's own record after the freeze confirms it.
            if backlog == 0 && caught_up && updated > freeze_at {
                return Ok(0);
            }
            if Instant::now() > deadline {
                return Err(Error::other(format!(
                    "the running replicate did not empty the change log within {}s ({backlog} change(s) left)",
                    self.opts.drain_timeout.as_secs()
                ))
                .with_fix("check that the replicate process is healthy (`heroku2rds status`), or stop it: cutover then applies the log itself"));
            }
            self.check_cancel()?;
            let _ = self
                .cancel
                .sleep(self.opts.poll.min(Duration::from_millis(500)))
                .await;
        }
    }
}
