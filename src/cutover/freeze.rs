//! The write freeze, before the point of no return: the previous-database attachment and its
//! release, formations saved, maintenance on, dynos stopped, the write fence raised, sessions
//! ended, the change log drained, sequences synced, late writers stopped, the final
//! verification. Everything here is undone by [`super::rollback`].

use super::*;

/// The pre-point-of-no-return part: everything here is undone by [`rollback`].
pub(super) struct Freeze<'a> {
    pub(super) heroku: &'a Heroku,
    pub(super) tgt: &'a Client,
    pub(super) src: &'a Client,
    pub(super) source: &'a ConnSpec,
    pub(super) opts: &'a Options,
    pub(super) id: i32,
    pub(super) scope: &'a Scope,
    pub(super) db: &'a Database,
    pub(super) cancel: &'a Cancel,
    pub(super) sink: &'a dyn Sink,
}

/// What a check for late writers found and did.
#[derive(Debug, Default, Serialize)]
pub(super) struct Late {
    /// Process types someone scaled up again (app/type), scaled to 0 again.
    rescaled: Vec<String>,
    /// Dynos stopped (app/name).
    stopped: Vec<String>,
    /// Formation dynos still running (app/name).
    running: Vec<String>,
    /// Sessions terminated on the source.
    sessions: usize,
}

impl Late {
    fn is_empty(&self) -> bool {
        self.rescaled.is_empty() && self.stopped.is_empty() && self.sessions == 0
    }
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
        let main = App::new(self.heroku, &opts.app);
        // Before the freeze: the release this attachment makes runs the app's release command
        // against the Heroku database, whose changes are still captured.
        let attachments = main.attachments().await?;
        let exists = attachments
            .iter()
            .any(|a| a.name == PREVIOUS_ATTACHMENT && a.addon.id == self.db.addon.id);
        if !exists {
            let before = main.latest_release().await?.map(|r| r.version).unwrap_or(0);
            main.attach(&self.db.addon.id, PREVIOUS_ATTACHMENT).await?;
            let made = main.latest_release().await?.map(|r| r.version).unwrap_or(0);
            if made > before {
                wait_release(&main, made, opts, self.cancel)
                    .await
                    .map_err(|e| {
                        e.context(format!("the release that attached {PREVIOUS_ATTACHMENT}"))
                    })?;
            }
        }
        self.record(Step::PreviousAttached, None).await?;
        self.check_cancel()?;

        for f in &self.scope.apps {
            if !f.maintenance_before {
                App::new(self.heroku, &f.app).set_maintenance(true).await?;
            }
        }
        self.record(Step::MaintenanceOn, None).await?;
        self.check_cancel()?;

        for f in &self.scope.apps {
            let zero: Vec<Process> = f
                .formation
                .iter()
                .filter(|p| p.quantity != 0 && !f.keep_running.contains(&p.process_type))
                .map(|p| Process {
                    quantity: 0,
                    ..p.clone()
                })
                .collect();
            App::new(self.heroku, &f.app).scale(&zero).await?;
        }
        self.record(Step::ScaledDown, None).await?;

        let deadline = Instant::now() + opts.dyno_timeout;
        let mut pace = crate::heroku::client::Pace::dynos(self.heroku);
        let mut stopped: BTreeSet<String> = BTreeSet::new();
        let mut late = Late::default();
        loop {
            self.stop_dynos(&mut stopped, &mut late).await?;
            if late.running.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::other(format!(
                    "dynos still running {}s after scaling to 0: {}",
                    opts.dyno_timeout.as_secs(),
                    late.running.join(", ")
                )));
            }
            self.check_cancel()?;
            let _ = self.cancel.sleep(pace.next_delay()).await;
        }
        self.record(
            Step::DynosStopped,
            Some(serde_json::json!({ "rescaled": late.rescaled })),
        )
        .await?;
        self.check_cancel()?;

        let raised = fence::raise(self.src, &Notice::Moving).await?;
        let freeze_at = self
            .record(Step::Fenced, Some(serde_json::json!(raised)))
            .await?;
        self.check_cancel()?;

        let mut ended = self.end_sessions(Some(self.opts.session_grace)).await?;
        let unfenced = fence::cover_all_tables(self.src, fence_install()).await?;
        let mut read_only_default = false;
        if !unfenced.is_empty() {
            // Tables without the trigger: new sessions start read-only, and the sessions opened
            // meanwhile end again.
            read_only_default = fence::set_read_only_default(self.src).await?;
            ended.terminated += self.end_sessions(None).await?.terminated;
        }
        self.record(
            Step::SessionsEnded,
            Some(serde_json::json!({
                "terminated": ended.terminated,
                "superuser_sessions": ended.superusers,
                "unfenced_tables": unfenced,
                "read_only_default": read_only_default,
            })),
        )
        .await?;
        self.check_cancel()?;

        // A prepared transaction survives the end of its session, and its COMMIT PREPARED
        // could land after the drain: none may be pending.
        let prepared: i64 = self
            .src
            .query_one(
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
                &[],
            )
            .await
            .map_err(|e| query_error(e, "looking for prepared transactions on the source"))?
            .get(0);
        if prepared > 0 {
            return Err(Error::new(
                Kind::Blocked,
                format!("{prepared} prepared transaction(s) are pending on the source: one committed after the final sync would be lost"),
            )
            .with_fix("finish them (COMMIT PREPARED or ROLLBACK PREPARED; see pg_prepared_xacts), then run cutover again"));
        }
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
        // The follower validated the foreign keys once caught up, so this is a catalog read
        // unless it never did; rows changed since are covered by the final verification (the
        // target then equals the source, which enforces them).
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
        // Materialized views were refreshed before the freeze and are again after the switch
        // (see `run` and `forward`): nothing to do with writes stopped.
        self.record(
            Step::MatviewsRefreshed,
            Some(serde_json::json!({ "refreshed": "before the freeze; again after the switch" })),
        )
        .await?;
        self.check_cancel()?;

        // Late writers are stopped while the verification reads: the fence already refuses
        // their writes, so the two need not wait for each other.
        let (before_verify, verified) =
            tokio::join!(self.late_writers(), self.final_verification());
        let (before_verify, (covered, report)) = (before_verify?, verified?);
        if !report.equal {
            let bad: Vec<String> = report
                .tables
                .iter()
                .filter(|t| !t.equal())
                .map(|t| {
                    let keys: Vec<&str> = t
                        .differences
                        .iter()
                        .take(3)
                        .map(|d| d.key.as_str())
                        .collect();
                    if t.ranges == 0 && !keys.is_empty() {
                        // Found through the table's ranges and keys: no row counts were taken.
                        return format!(
                            "{} ({} differing row(s): {})",
                            t.table,
                            t.differences_found,
                            keys.join(", ")
                        );
                    }
                    format!(
                        "{} ({} rows on the source, {} on the target, {} differing row(s){}{})",
                        t.table,
                        t.source_rows,
                        t.target_rows,
                        t.differences_found,
                        if keys.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", keys.join(", "))
                        },
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
        let before_switch = self.late_writers().await?;
        self.record(
            Step::Verified,
            Some(serde_json::json!({
                "tables": report.tables.len(),
                "coverage": covered,
                "late_before_verify": before_verify,
                "late_before_switch": before_switch,
            })),
        )
        .await?;
        self.check_cancel()
    }

    /// The final verification: what continuous verification has not proven yet (touched keys,
    /// ranges never compared, recorded differences, a sample of the rest), then every table it
    /// does not cover (keyless tables, tables not split yet) compared whole.
    async fn final_verification(&self) -> Result<(verify::ranges::Final, verify::Report)> {
        let started = Instant::now();
        let src = self.source.connect().await?;
        let mut tgt = self.opts.target.connect().await?;
        let (mut fin, diffs, covered) =
            verify::ranges::final_check(&src, &mut tgt, verify::ranges::SAMPLE_RANGES).await?;
        let mut report = verify::run_except(
            self.source,
            &self.opts.target,
            self.opts.jobs.max(1),
            self.sink,
            &covered,
        )
        .await?;
        fin.tables_whole = report.tables.iter().filter(|t| !t.skipped).count();
        let mut by_table: BTreeMap<String, Vec<verify::Difference>> = BTreeMap::new();
        for (table, d) in diffs {
            by_table.entry(table).or_default().push(d);
        }
        for (table, differences) in by_table {
            report.tables.push(verify::TableVerdict {
                table,
                source_rows: 0,
                target_rows: 0,
                source_key_range: None,
                target_key_range: None,
                ranges: 0,
                mismatched_ranges: differences.len(),
                differences_found: differences.len(),
                differences,
                error: None,
                skipped: false,
            });
            report.equal = false;
        }
        fin.seconds = started.elapsed().as_secs_f64();
        let line = format!(
            "final verification: {} table(s) through their ranges ({} range(s) scanned: {} changed since their proof, {} a random sample of proven ones, the rest never proven; {} key(s) compared one by one; {} rows, {:.1} MB), {} table(s) compared whole, in {:.2}s",
            fin.tables_by_range,
            fin.checked.ranges,
            fin.dirty_scanned,
            fin.sampled,
            fin.checked.keys,
            fin.checked.rows,
            fin.checked.bytes as f64 / 1e6,
            fin.tables_whole,
            fin.seconds
        );
        tracing::info!("{line}");
        self.sink.info("cutover", line);
        Ok((fin, report))
    }

    /// One pass over every app: scales back to 0 the process types someone scaled up again
    /// (an autoscaler), stops one-off dynos (Scheduler jobs, `heroku run`, release commands)
    /// once each, and lists the formation dynos still running in `late.running`.
    async fn stop_dynos(&self, stopped: &mut BTreeSet<String>, late: &mut Late) -> Result<()> {
        late.running.clear();
        for f in &self.scope.apps {
            let app = App::new(self.heroku, &f.app);
            let live = app.formation().await?;
            let again: Vec<Process> = live
                .iter()
                .filter(|p| p.quantity != 0 && !f.keep_running.contains(&p.process_type))
                .map(|p| Process {
                    quantity: 0,
                    ..p.clone()
                })
                .collect();
            if !again.is_empty() {
                for p in &again {
                    tracing::warn!(
                        "app {}: process type {} was scaled up again during the cutover (an autoscaler?): scaling it to 0 again",
                        f.app,
                        p.process_type
                    );
                    late.rescaled.push(format!("{}/{}", f.app, p.process_type));
                }
                app.scale(&again).await?;
            }
            for d in app.dynos().await? {
                if !d.may_run() || f.keep_running.contains(&d.process_type) {
                    continue;
                }
                let in_formation = live.iter().any(|p| p.process_type == d.process_type);
                if in_formation {
                    late.running.push(format!("{}/{}", f.app, d.name));
                } else if stopped.insert(format!("{}/{}", f.app, d.id)) {
                    // One-off dynos (Scheduler jobs, `heroku run`) are not waited for: a
                    // scheduler may start one every minute. What they wrote before the fence
                    // is captured; after it, their writes fail.
                    tracing::info!("app {}: stopping one-off dyno {}", f.app, d.name);
                    app.stop_dyno(&d).await?;
                    late.stopped.push(format!("{}/{}", f.app, d.name));
                }
            }
        }
        Ok(())
    }

    /// Re-checks for writers that appeared after the freeze began (Scheduler jobs, `heroku run`,
    /// autoscalers, clients that reconnected): stops their dynos and ends their sessions at
    /// once. The fence already makes their writes fail; this keeps them from waiting on it.
    async fn late_writers(&self) -> Result<Late> {
        let mut stopped = BTreeSet::new();
        let mut late = Late::default();
        self.stop_dynos(&mut stopped, &mut late).await?;
        late.sessions = self.end_sessions(None).await?.terminated;
        if !late.is_empty() {
            tracing::warn!(
                "writers appeared during the freeze (stopped; the write fence refused their writes): {}",
                serde_json::to_string(&late).unwrap_or_default()
            );
        }
        Ok(late)
    }

    /// Waits up to `grace` for the other sessions on the source to end (None: no wait), then
    /// terminates the rest. Superusers' sessions cannot be terminated by the database owner:
    /// they are counted and reported, and the fence still stops their writes to fenced tables.
    async fn end_sessions(&self, grace: Option<Duration>) -> Result<Ended> {
        const OTHERS: &str = "SELECT a.pid, coalesce(r.rolsuper, false) FROM pg_stat_activity a
                LEFT JOIN pg_roles r ON r.oid = a.usesysid
              WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                AND a.backend_type = 'client backend' AND a.application_name NOT LIKE 'heroku2rds%'";
        let deadline = Instant::now() + grace.unwrap_or_default();
        loop {
            let rows = self
                .src
                .query(OTHERS, &[])
                .await
                .map_err(|e| query_error(e, "listing sessions on the source"))?;
            let superusers = rows.iter().filter(|r| r.get::<_, bool>(1)).count();
            let pids: Vec<i32> = rows
                .iter()
                .filter(|r| !r.get::<_, bool>(1))
                .map(|r| r.get(0))
                .collect();
            if superusers > 0 {
                tracing::warn!("{superusers} superuser session(s) on the source (Heroku's own?): they cannot be terminated by the database owner; the write fence still refuses their writes to the tables");
            }
            if pids.is_empty() {
                return Ok(Ended {
                    terminated: 0,
                    superusers,
                });
            }
            if Instant::now() >= deadline {
                if grace.is_some() {
                    tracing::warn!(
                        "{} session(s) still on the source after {}s: terminating them",
                        pids.len(),
                        self.opts.session_grace.as_secs()
                    );
                }
                let mut n = 0;
                for pid in &pids {
                    match self
                        .src
                        .query_one("SELECT pg_terminate_backend($1)", &[pid])
                        .await
                    {
                        Ok(r) => n += usize::from(r.get::<_, bool>(0)),
                        Err(e) => {
                            tracing::warn!("could not terminate session {pid} on the source: {e}")
                        }
                    }
                }
                // Terminated sessions take a moment to go; clients that reconnect at once are
                // refused by the fence, so their new sessions need not be waited for.
                for _ in 0..50 {
                    let left = self
                        .src
                        .query(
                            "SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1)",
                            &[&pids],
                        )
                        .await
                        .map_err(|e| query_error(e, "listing sessions on the source"))?
                        .len();
                    if left == 0 {
                        return Ok(Ended {
                            terminated: n,
                            superusers,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return Err(Error::other(
                    "sessions of other clients stay connected to the source after being terminated",
                ));
            }
            self.check_cancel()?;
            let _ = self.cancel.sleep(DB_POLL).await;
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
            // An empty log seen after the fence means every change was applied and committed
            // on the target (log rows are deleted only after their apply commits); the
            // follower's own record after the fence confirms it.
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
            let _ = self.cancel.sleep(DB_POLL).await;
        }
    }
}

/// How often the freeze re-reads the databases while it waits (the follower's progress, the
/// sessions): a cheap query, and every tenth of a second is write freeze.
const DB_POLL: Duration = Duration::from_millis(100);

/// Sessions ended on the source.
struct Ended {
    terminated: usize,
    superusers: usize,
}

/// How the fence goes onto tables created since the capture: the sessions have ended, so the
/// locks are free; a short timeout still keeps a superuser's lock from stalling the freeze.
fn fence_install() -> InstallOptions {
    InstallOptions {
        lock_timeout: Duration::from_millis(500),
        max_wait: Duration::from_secs(30),
    }
}

/// Waits for release `version` of `app` to succeed; its failure (the release phase) or the
/// timeout is an error.
pub(super) async fn wait_release(
    app: &App<'_>,
    version: i64,
    opts: &Options,
    cancel: &Cancel,
) -> Result<()> {
    let deadline = Instant::now() + opts.release_timeout;
    let mut pace = crate::heroku::client::Pace::releases(app.client());
    loop {
        let r = app.release(version).await?;
        match r.status.as_str() {
            "succeeded" => return Ok(()),
            "failed" => {
                return Err(Error::other(format!(
                    "release v{version} of app {} ({}) failed: its release phase (the `release` process) did not succeed",
                    app.name(),
                    r.description
                ))
                .with_fix("read the release's output (`heroku releases:output v{version} -a APP`), fix the release command, then run `heroku2rds cutover` again"));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(Error::other(format!(
                "release v{version} of app {} did not finish within {}s",
                app.name(),
                opts.release_timeout.as_secs()
            ))
            .with_fix("raise --release-timeout-s (Heroku allows a release phase up to an hour), then run `heroku2rds cutover` again"));
        }
        let _ = cancel.sleep(pace.next_delay()).await;
    }
}
