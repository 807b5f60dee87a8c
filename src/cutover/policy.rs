//! The cutover's decisions, as pure functions with table tests: the steps and their order, what a
//! re-run does, whether the switch may start, what a rollback changes, when the formation is up,
//! and whether the app's new URL is acceptable.

use super::*;

/// The steps, in order. Those after [`Step::PointOfNoReturn`] only ever go forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Preconditions held; formation and maintenance saved.
    Checked,
    /// The Heroku database is also attached as [`PREVIOUS_ATTACHMENT`], and the release that
    /// made (with its release phase) is done: before the freeze, so that a release command
    /// writing to the Heroku database is still captured.
    PreviousAttached,
    /// Maintenance mode on.
    MaintenanceOn,
    /// Every process type scaled to 0, one-off dynos stopped.
    ScaledDown,
    /// No dyno of the formation runs; one-off dynos were told to stop: the write freeze begins.
    DynosStopped,
    /// The write fence is up on the source: no other session can change a table.
    Fenced,
    /// No session of the app left on the source.
    SessionsEnded,
    /// The change log is empty and applied.
    Drained,
    /// Keyless tables copied again.
    KeylessRecopied,
    /// Sequences set exactly, foreign keys validated.
    SequencesSynced,
    /// Materialized views refreshed.
    MatviewsRefreshed,
    /// The final verification found no difference.
    Verified,
    /// Recorded before the first irreversible change.
    PointOfNoReturn,
    /// The `DATABASE` attachment removed.
    DatabaseDetached,
    /// `DATABASE_URL` points at the target.
    DatabaseUrlSet,
    /// The release of the switch succeeded.
    ReleaseSucceeded,
    /// The saved formation is back (only now: dynos started while the release is pending
    /// would run the previous release, with the previous `DATABASE_URL`).
    FormationRestored,
    /// Every dyno of the formation is up on that release.
    DynosUp,
    /// Maintenance off (if it was off before).
    MaintenanceOff,
    /// Done.
    Completed,
}

impl Step {
    /// Every step in order.
    pub const ALL: [Step; 20] = [
        Step::Checked,
        Step::PreviousAttached,
        Step::MaintenanceOn,
        Step::ScaledDown,
        Step::DynosStopped,
        Step::Fenced,
        Step::SessionsEnded,
        Step::Drained,
        Step::KeylessRecopied,
        Step::SequencesSynced,
        Step::MatviewsRefreshed,
        Step::Verified,
        Step::PointOfNoReturn,
        Step::DatabaseDetached,
        Step::DatabaseUrlSet,
        Step::ReleaseSucceeded,
        Step::FormationRestored,
        Step::DynosUp,
        Step::MaintenanceOff,
        Step::Completed,
    ];

    /// The recorded name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Checked => "checked",
            Step::MaintenanceOn => "maintenance-on",
            Step::ScaledDown => "scaled-down",
            Step::DynosStopped => "dynos-stopped",
            Step::Fenced => "fenced",
            Step::SessionsEnded => "sessions-ended",
            Step::Drained => "drained",
            Step::KeylessRecopied => "keyless-recopied",
            Step::SequencesSynced => "sequences-synced",
            Step::MatviewsRefreshed => "matviews-refreshed",
            Step::Verified => "verified",
            Step::PreviousAttached => "previous-attached",
            Step::PointOfNoReturn => "point-of-no-return",
            Step::DatabaseDetached => "database-detached",
            Step::DatabaseUrlSet => "database-url-set",
            Step::FormationRestored => "formation-restored",
            Step::ReleaseSucceeded => "release-succeeded",
            Step::DynosUp => "dynos-up",
            Step::MaintenanceOff => "maintenance-off",
            Step::Completed => "completed",
        }
    }

    /// Parses a recorded name (rollback records and unknown names give None).
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// What the step does to the app or the databases, for the plan.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Checked => "check readiness; save the formation and the maintenance setting",
            Step::MaintenanceOn => "turn maintenance mode on (the router answers 503)",
            Step::ScaledDown => "scale every process type to 0 and stop one-off dynos",
            Step::DynosStopped => "wait until no dyno of the formation runs (one-off dynos are stopped, not waited for)",
            Step::Fenced => "raise the write fence on the Heroku database: every other session's write fails from here, whoever it is (one-off and Scheduler dynos, the pooler, other apps, external clients)",
            Step::SessionsEnded => "wait for the app's sessions on the Heroku database to end; terminate stragglers after the grace period (superusers' sessions cannot be and are reported)",
            Step::Drained => "apply the change log until it is empty",
            Step::KeylessRecopied => "copy tables without a key again (--keyless recopy)",
            Step::SequencesSynced => "set every sequence exactly; validate foreign keys",
            Step::MatviewsRefreshed => "materialized views: refreshed on the target before the freeze begins, and again after the switch (CONCURRENTLY where a unique index allows, see the plan)",
            Step::Verified => "stop dynos and sessions that appeared since; final verification: any difference rolls back",
            Step::PreviousAttached => "attach the Heroku database also as HEROKU2RDS_PREVIOUS_DATABASE (its URL stays available) and wait for that release (its release phase still runs against the Heroku database, whose changes are captured)",
            Step::PointOfNoReturn => "POINT OF NO RETURN: stop dynos and sessions that appeared since; record the switch on the target (every follower stops for good); the fence now says where the database went",
            Step::DatabaseDetached => "detach DATABASE (and every attachment moved with it) from the Heroku database",
            Step::DatabaseUrlSet => "set DATABASE_URL (and every moved variable) to the target",
            Step::ReleaseSucceeded => "wait for the release of that change to succeed on every app (dynos started before would still get the old DATABASE_URL); a failed one is retried by a re-run",
            Step::FormationRestored => "restore the saved formation of every app",
            Step::DynosUp => "wait for every dyno to be up on the new release",
            Step::MaintenanceOff => "turn maintenance mode off (where it was off before)",
            Step::Completed => "done: report the downtime",
        }
    }
}

/// What a run does given the newest recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No unfinished attempt: start a new one.
    Fresh,
    /// An attempt stopped before the point of no return: roll it back (and stop).
    RollBack,
    /// An attempt passed the point of no return: continue from this step.
    Continue(Step),
    /// The newest attempt completed: nothing to do.
    AlreadyCompleted,
}

/// Decides what a (re-)run does from the newest attempt's outcome and recorded steps. Pure.
pub fn resume(outcome: Option<&str>, steps: &BTreeSet<Step>) -> Option<Resume> {
    Some(match outcome {
        Some("completed") => Resume::AlreadyCompleted,
        Some("rolled-back") => Resume::Fresh,
        Some(_) => return None,
        None if steps.contains(&Step::PointOfNoReturn) => Resume::Continue(
            Step::ALL
                .into_iter()
                .find(|s| *s > Step::PointOfNoReturn && !steps.contains(s))
                .unwrap_or(Step::Completed),
        ),
        None => Resume::RollBack,
    })
}

/// Facts the readiness check decides on.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Phase of the migration on the target (None: no migration there).
    pub phase: Option<Phase>,
    /// Change-log rows waiting on the source.
    pub backlog: i64,
    /// Age in seconds of the oldest of them.
    pub oldest_change_s: Option<f64>,
    /// Why the follower stopped, if it recorded a reason.
    pub follow_stopped: Option<String>,
    /// Schema changes on the source since the copy.
    pub schema_changes: Vec<String>,
    /// The target is a read-only replica.
    pub target_in_recovery: bool,
    /// The add-on is attached to the app as `DATABASE`.
    pub database_attached: bool,
    /// `--source` names another database than the app's `DATABASE_URL`.
    pub source_mismatch: Option<String>,
    /// An attachment named [`PREVIOUS_ATTACHMENT`] exists for another add-on.
    pub previous_taken: Option<String>,
    /// The formation was read (may be empty).
    pub formation_known: bool,
    /// Continuous verification's coverage and the differences it found.
    pub coverage: Option<crate::pg::verify::ranges::Coverage>,
}

/// Why the cutover cannot start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// Short code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// The readiness check. Pure: empty means ready.
pub fn readiness(f: &Facts, max_lag: Duration) -> Vec<Blocker> {
    let mut out = Vec::new();
    let mut block = |code, message: String, fix: &str| {
        out.push(Blocker {
            code,
            message,
            fix: fix.to_string(),
        })
    };
    match f.phase {
        None => block(
            "no-migration",
            "the target holds no heroku2rds migration".into(),
            "run `heroku2rds replicate` first (and keep it following with --until forever)",
        ),
        Some(p) if p != Phase::Copied => block(
            "copy-unfinished",
            format!("the copy is not finished (phase {})", p.as_str()),
            "let `heroku2rds replicate` finish; `heroku2rds status` shows its progress",
        ),
        Some(_) => {}
    }
    let lag = if f.backlog > 0 {
        f.oldest_change_s.unwrap_or(0.0)
    } else {
        0.0
    };
    if lag > max_lag.as_secs_f64() {
        block(
            "lagging",
            format!(
                "replication lags: {} change(s) waiting, the oldest {:.0}s old (limit {}s)",
                f.backlog,
                lag,
                max_lag.as_secs()
            ),
            "keep `heroku2rds replicate --until forever` running until it has caught up (or raise --max-lag-s: the drain then happens during the downtime)",
        );
    }
    if let Some(c) = f.coverage.as_ref().filter(|c| c.difference_count > 0) {
        block(
            "differences",
            format!(
                "verification found {} row(s) that differ on the target with no change in flight: {}",
                c.difference_count,
                c.differences.join("; ")
            ),
            "find the cause (a writer on the target? a trigger that changes rows?), fix those rows on the target (or start the migration over); a re-check clears a row once it compares equal",
        );
    }
    if let Some(r) = &f.follow_stopped {
        if r != "interrupted" {
            block(
                "follow-stopped",
                format!("applying changes stopped: {r}"),
                "fix what stopped it, then let replicate catch up",
            );
        }
    }
    if !f.schema_changes.is_empty() {
        block(
            "schema-changed",
            format!(
                "the source schema changed since the copy: {}",
                f.schema_changes.join("; ")
            ),
            "apply the same DDL to the target and start the migration of those tables over",
        );
    }
    if f.target_in_recovery {
        block(
            "target-read-only",
            "the target is a read-only replica".into(),
            "point --target at the primary",
        );
    }
    if !f.database_attached {
        block(
            "no-database-attachment",
            "the Heroku Postgres add-on is not attached to the app as DATABASE".into(),
            "the app must use its Heroku Postgres database through DATABASE_URL; check `heroku addons -a APP`",
        );
    }
    if let Some(m) = &f.source_mismatch {
        block(
            "source-mismatch",
            m.clone(),
            "pass the app's DATABASE_URL as --source (or leave --source out: it is read from Heroku)",
        );
    }
    if let Some(p) = &f.previous_taken {
        block(
            "previous-attachment-taken",
            p.clone(),
            "remove that attachment (`heroku addons:detach`) before the cutover",
        );
    }
    if !f.formation_known {
        block(
            "formation-unknown",
            "the app's formation could not be read".into(),
            "check the token's permissions on the app",
        );
    }
    out
}

/// A change a rollback makes to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackAction {
    /// Remove the attachment the cutover added (by id).
    DetachPrevious(String),
    /// Scale these process types back.
    Scale(Vec<Process>),
    /// Turn maintenance off.
    MaintenanceOff,
}

/// What a rollback must change, comparing the saved state with the live one. Pure. Never
/// touches `DATABASE_URL` or the `DATABASE` attachment.
pub fn rollback_plan(
    saved: &[Process],
    maintenance_before: bool,
    live_formation: &[Process],
    live_maintenance: bool,
    previous_attachment: Option<&str>,
) -> Vec<RollbackAction> {
    let mut actions = Vec::new();
    if let Some(id) = previous_attachment {
        actions.push(RollbackAction::DetachPrevious(id.to_string()));
    }
    let live: BTreeMap<&str, &Process> = live_formation
        .iter()
        .map(|p| (p.process_type.as_str(), p))
        .collect();
    let scale: Vec<Process> = saved
        .iter()
        .filter(|p| {
            live.get(p.process_type.as_str())
                .is_none_or(|l| l.quantity != p.quantity || !l.size.eq_ignore_ascii_case(&p.size))
        })
        .cloned()
        .collect();
    if !scale.is_empty() {
        actions.push(RollbackAction::Scale(scale));
    }
    if live_maintenance && !maintenance_before {
        actions.push(RollbackAction::MaintenanceOff);
    }
    actions
}

/// Whether the formation is fully up on release `version` or later: per process type as many
/// dynos `up` on it as the saved quantity, and no dyno of an older release still running. Pure.
pub fn formation_up(saved: &[Process], dynos: &[Dyno], version: i64) -> bool {
    saved.iter().all(|p| {
        let of_type: Vec<&Dyno> = dynos
            .iter()
            .filter(|d| d.process_type == p.process_type && d.may_run())
            .collect();
        let up_on_new = of_type
            .iter()
            .filter(|d| d.state == "up" && d.release.as_ref().is_some_and(|r| r.version >= version))
            .count() as i64;
        let old = of_type
            .iter()
            .any(|d| d.release.as_ref().is_none_or(|r| r.version < version));
        up_on_new >= p.quantity && !old
    })
}

/// Checks the URL the app will get as `DATABASE_URL`: a valid PostgreSQL URL that requires TLS.
pub fn check_app_url(raw: &str) -> Result<ConnSpec> {
    let spec = ConnSpec::parse(raw, "target app")?;
    // What the app's own driver will do with the URL as written (libpq defaults to prefer,
    // which falls back to plaintext), not what heroku2rds makes of it.
    let written = url::Url::parse(raw.trim())
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "sslmode")
                .map(|(_, v)| v.into_owned())
        })
        .map(|m| SslMode::parse(&m))
        .transpose()?
        .unwrap_or(SslMode::Prefer);
    match written {
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Ok(spec),
        other => Err(Error::usage(format!(
            "the URL the app will use (--target-app-url, default --target) has sslmode={}: the app could connect without TLS",
            other.as_str()
        ))
        .with_fix("add sslmode=require (or verify-full with sslrootcert) to the URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heroku::app::ReleaseRef;

    fn steps(list: &[Step]) -> BTreeSet<Step> {
        list.iter().copied().collect()
    }

    #[test]
    fn step_names_round_trip_and_are_ordered() {
        for (i, s) in Step::ALL.iter().enumerate() {
            assert_eq!(Step::parse(s.as_str()), Some(*s));
            if i > 0 {
                assert!(Step::ALL[i - 1] < *s);
            }
        }
        assert_eq!(Step::parse("rollback-started"), None);
    }

    #[test]
    fn rerun_decisions() {
        assert_eq!(
            resume(Some("completed"), &steps(&Step::ALL)),
            Some(Resume::AlreadyCompleted)
        );
        assert_eq!(
            resume(Some("rolled-back"), &steps(&[Step::Checked])),
            Some(Resume::Fresh)
        );
        assert_eq!(resume(Some("bogus"), &steps(&[])), None);
        // Every prefix before the point of no return rolls back.
        let pnr = Step::ALL
            .iter()
            .position(|s| *s == Step::PointOfNoReturn)
            .expect("pnr");
        for n in 0..pnr {
            assert_eq!(
                resume(None, &steps(&Step::ALL[..n])),
                Some(Resume::RollBack),
                "{n} steps"
            );
        }
        // Every prefix from it on continues with the next step.
        for n in pnr + 1..Step::ALL.len() {
            assert_eq!(
                resume(None, &steps(&Step::ALL[..n])),
                Some(Resume::Continue(Step::ALL[n])),
                "{n} steps"
            );
        }
        assert_eq!(
            resume(None, &steps(&Step::ALL)),
            Some(Resume::Continue(Step::Completed))
        );
        // Rollback records beside the steps change nothing.
        assert_eq!(
            resume(None, &steps(&[Step::Checked, Step::MaintenanceOn])),
            Some(Resume::RollBack)
        );
    }

    fn ready_facts() -> Facts {
        Facts {
            phase: Some(Phase::Copied),
            backlog: 3,
            oldest_change_s: Some(0.5),
            database_attached: true,
            formation_known: true,
            follow_stopped: Some("interrupted".into()),
            ..Default::default()
        }
    }

    #[test]
    fn readiness_checks() {
        let lag = Duration::from_secs(30);
        assert_eq!(readiness(&ready_facts(), lag), vec![]);
        let codes = |f: &Facts| readiness(f, lag).iter().map(|b| b.code).collect::<Vec<_>>();
        let mut f = ready_facts();
        f.phase = None;
        assert_eq!(codes(&f), ["no-migration"]);
        f.phase = Some(Phase::Copying);
        assert_eq!(codes(&f), ["copy-unfinished"]);
        let mut f = ready_facts();
        f.oldest_change_s = Some(31.0);
        assert_eq!(codes(&f), ["lagging"]);
        f.backlog = 0; // an empty log has no lag whatever the stale age says
        assert_eq!(codes(&f), Vec::<&str>::new());
        let mut f = ready_facts();
        f.follow_stopped = Some("schema change on the source: x".into());
        assert_eq!(codes(&f), ["follow-stopped"]);
        let mut f = ready_facts();
        f.schema_changes = vec!["public.t: column".into()];
        f.target_in_recovery = true;
        f.database_attached = false;
        f.source_mismatch = Some("m".into());
        f.previous_taken = Some("p".into());
        f.formation_known = false;
        assert_eq!(
            codes(&f),
            [
                "schema-changed",
                "target-read-only",
                "no-database-attachment",
                "source-mismatch",
                "previous-attachment-taken",
                "formation-unknown"
            ]
        );
    }

    fn p(t: &str, q: i64, size: &str) -> Process {
        Process {
            process_type: t.into(),
            quantity: q,
            size: size.into(),
        }
    }

    #[test]
    fn rollback_plans() {
        let saved = [
            p("web", 2, "Standard-1X"),
            p("worker", 1, "Standard-2X"),
            p("clock", 0, "Basic"),
        ];
        // Nothing changed yet (crash right after recording the attempt).
        assert_eq!(rollback_plan(&saved, false, &saved, false, None), vec![]);
        // Scaled down, maintenance on, previous attached.
        let down = [
            p("web", 0, "Standard-1X"),
            p("worker", 0, "Standard-2X"),
            p("clock", 0, "Basic"),
        ];
        assert_eq!(
            rollback_plan(&saved, false, &down, true, Some("att-1")),
            vec![
                RollbackAction::DetachPrevious("att-1".into()),
                RollbackAction::Scale(vec![
                    p("web", 2, "Standard-1X"),
                    p("worker", 1, "Standard-2X")
                ]),
                RollbackAction::MaintenanceOff,
            ]
        );
        // Maintenance was already on before: it stays on.
        assert_eq!(rollback_plan(&saved, true, &saved, true, None), vec![]);
        // A size changed (size names compare case-insensitively), a type vanished.
        let odd = [p("web", 2, "standard-1x"), p("worker", 1, "Performance-M")];
        assert_eq!(
            rollback_plan(&saved, false, &odd, false, None),
            vec![RollbackAction::Scale(vec![
                p("worker", 1, "Standard-2X"),
                p("clock", 0, "Basic")
            ])]
        );
    }

    fn dyno(t: &str, state: &str, v: Option<i64>) -> Dyno {
        Dyno {
            id: format!("{t}-{state}-{v:?}"),
            name: format!("{t}.1"),
            process_type: t.into(),
            state: state.into(),
            release: v.map(|version| ReleaseRef {
                id: String::new(),
                version,
            }),
            created_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn formation_readiness() {
        let saved = [p("web", 2, "Standard-1X"), p("worker", 0, "Standard-1X")];
        assert!(!formation_up(&saved, &[], 5));
        assert!(!formation_up(&saved, &[dyno("web", "up", Some(5))], 5));
        assert!(formation_up(
            &saved,
            &[dyno("web", "up", Some(5)), dyno("web", "up", Some(6))],
            5
        ));
        assert!(!formation_up(
            &saved,
            &[dyno("web", "up", Some(5)), dyno("web", "starting", Some(5))],
            5
        ));
        // An old-release dyno still running means the restart is not over.
        assert!(!formation_up(
            &saved,
            &[
                dyno("web", "up", Some(5)),
                dyno("web", "up", Some(5)),
                dyno("web", "up", Some(4))
            ],
            5
        ));
        // ... but a stopped one does not count.
        assert!(formation_up(
            &saved,
            &[
                dyno("web", "up", Some(5)),
                dyno("web", "up", Some(5)),
                dyno("web", "down", Some(4))
            ],
            5
        ));
        assert!(formation_up(&[], &[], 1));
    }

    #[test]
    fn app_urls_must_require_tls() {
        assert!(check_app_url("postgres://u:p@h:5432/d?sslmode=require").is_ok());
        assert!(check_app_url("postgres://u:p@h:5432/d?sslmode=verify-full").is_ok());
        for bad in [
            "postgres://u:p@h/d",
            "postgres://u:p@h/d?sslmode=prefer",
            "postgres://u:p@h/d?sslmode=disable",
        ] {
            let e = check_app_url(bad).expect_err(bad);
            assert_eq!(e.kind(), Kind::Usage);
            assert!(
                !e.message().contains(":p@"),
                "no password in {}",
                e.message()
            );
        }
    }
}
