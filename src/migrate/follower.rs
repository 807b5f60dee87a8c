//! Replication while `migrate` waits: a follower in this process (`--runner local`) or the EC2
//! worker's, watched through the target's records until it is caught up enough to cut over.

use super::*;
use crate::pg::status::Status;

/// A follower running in this process.
pub(super) struct Follower {
    cancel: Cancel,
    pub(super) task: tokio::task::JoinHandle<Result<replicate::Outcome>>,
}

impl Follower {
    pub(super) fn start(
        source: &ConnSpec,
        target: &ConnSpec,
        opts: &replicate::Options,
    ) -> Follower {
        let cancel = Cancel::new();
        let (s, t, o, c) = (
            source
                .clone()
                .with_application_name(replicate::SOURCE_APPLICATION_NAME),
            target.clone(),
            replicate::Options {
                until: replicate::Until::Forever,
                ..opts.clone()
            },
            cancel.clone(),
        );
        let task = tokio::spawn(async move { replicate::run(&s, &t, &o, c).await });
        Follower { cancel, task }
    }

    /// Stops it between batches and waits.
    pub(super) async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        match self.task.await {
            Ok(r) => r.map(|_| ()),
            Err(e) => Err(Error::other("the replication task failed").with_source(e)),
        }
    }
}

/// Caught up enough to cut over: every table copied and indexed, the change log drained by a
/// follower that reported recently.
fn ready(s: &Status) -> bool {
    s.phase == "copied"
        && s.caught_up
        && s.follow_updated_s.is_some_and(|t| t < 30.0)
        && s.stopped_reason.is_none()
}

/// Where the EC2 worker reports its bootstrap: the AWS configuration and the bucket.
pub(super) struct BootstrapProbe<'a> {
    pub(super) aws: &'a Aws,
    pub(super) bucket: &'a str,
}

/// Shows progress until the target is ready for the cutover. Until the EC2 worker's first
/// progress, shows its bootstrap state, and stops early when its bootstrap failed.
pub(super) async fn wait_until_caught_up(
    o: &Options,
    target: &ConnSpec,
    follower: &mut Option<Follower>,
    probe: Option<BootstrapProbe<'_>>,
    cancel: &Cancel,
    say: &dyn Sink,
) -> Result<Status> {
    let started = Instant::now();
    loop {
        if cancel.is_cancelled() {
            if let Some(f) = follower.take() {
                f.stop().await?;
            }
            return Err(Error::other("interrupted while replicating")
                .with_fix("run `heroku2rds migrate` again: it resumes where it stopped"));
        }
        if let Some(f) = follower.as_ref() {
            if f.task.is_finished() {
                let Some(f) = follower.take() else {
                    unreachable!("checked above")
                };
                return match f.task.await {
                    Ok(Ok(_)) => Err(Error::other("replication stopped before catching up")
                        .with_fix("run `heroku2rds migrate` again: it resumes where it stopped")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(Error::other("the replication task failed").with_source(e)),
                };
            }
        }
        let st = match status::read(target).await {
            Ok(s) => Some(s),
            // No migration on the target yet: the runner has not started it.
            Err(e) if e.kind() == Kind::Usage => None,
            Err(e) => return Err(e),
        };
        match st {
            Some(s) => {
                if ready(&s) {
                    say.emit(Event::Finished(Box::new(s.clone())));
                    return Ok(s);
                }
                if let Some(why) = &s.stopped_reason {
                    if s.runner.is_none() {
                        return Err(Error::other(format!("replication stopped: {why}"))
                            .with_fix("see `heroku2rds status`; fix the cause and run `heroku2rds migrate` again"));
                    }
                }
                say.emit(Event::Snapshot(Box::new(s)));
            }
            None => {
                let boot = match (&probe, o.runner) {
                    (Some(p), Runner::Ec2) => {
                        match crate::aws::bootstrap::read(p.aws, p.bucket).await {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::debug!("reading the worker's bootstrap state: {e}");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                if let Some(b) = boot.as_ref().filter(|b| b.failed()) {
                    return Err(b.error("the EC2 worker"));
                }
                // Started, but the worker reports that the source refuses it.
                let report = match o.runner {
                    Runner::Ec2 => worker_report(target).await,
                    Runner::Local => None,
                };
                if let Some(e) = report.as_ref().and_then(stuck) {
                    return Err(e);
                }
                if o.runner == Runner::Ec2 && started.elapsed() > o.worker_start_timeout {
                    return Err(Error::other(format!(
                        "the EC2 worker has not started replicating after {}",
                        format_duration(o.worker_start_timeout.as_secs_f64())
                    ))
                    .with_fix("read the worker's console output (aws ec2 get-console-output) or its journal (journalctl -u heroku2rds-worker over SSH), then run migrate again"));
                }
                say.waiting(&match (o.runner, &boot) {
                    _ if report.as_ref().is_some_and(|r| r.state != "running") => format!(
                        "the EC2 worker {}",
                        report.as_ref().map(status::describe_report).unwrap_or_default()
                    ),
                    (Runner::Ec2, Some(b)) => format!("worker bootstrap: {}", b.describe()),
                    (Runner::Ec2, None) => "waiting for the EC2 worker to start replicating (it installs the PostgreSQL client first)".to_string(),
                    (Runner::Local, _) => "starting replication".to_string(),
                });
            }
        }
        // Cancelled: the next turn stops the follower and says so.
        let _ = cancel.sleep(o.poll).await;
    }
}

/// The worker's own report on the target; `None` when there is none or it cannot be read.
async fn worker_report(target: &ConnSpec) -> Option<store::WorkerReport> {
    let c = target.connect().await.ok()?;
    store::worker_report(&c).await.ok().flatten()
}

/// How long a worker may report an unreachable source before `migrate` stops waiting: long
/// enough for a restart or two (a Heroku maintenance blip), short against the 20 minutes a
/// silent worker gets.
const UNREACHABLE_GRACE_S: f64 = 60.0;

/// The error that ends the wait when the worker has reported, recently and for longer than the
/// grace, that the source refuses it.
fn stuck(r: &store::WorkerReport) -> Option<Error> {
    (r.state == "source-unreachable" && r.since_s >= UNREACHABLE_GRACE_S && r.age_s < 120.0).then(|| {
        Error::other(format!(
            "the EC2 worker cannot reach the source: {}",
            status::describe_report(r)
        ))
        .with_fix("check that HEROKU2RDS_SOURCE_URL (the app's DATABASE_URL) is current and reachable from AWS, then run `heroku2rds migrate` again: it hands the current URL to the worker")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: &str, caught_up: bool, updated: Option<f64>) -> Status {
        Status {
            source: "h:5432/d".into(),
            phase: phase.into(),
            runner: Some("heroku2rds replicate on w pid 1".into()),
            worker_source_outdated: false,
            worker_report: None,
            chunks_done: 1,
            chunks_total: 1,
            rows: 10,
            bytes: 100,
            copy_seconds: 1.0,
            bytes_per_second: 100.0,
            rows_per_second: 10.0,
            eta_seconds: None,
            schema_items_done: 1,
            backlog: Some(0),
            oldest_change_s: None,
            caught_up,
            applied_changes: 5,
            apply_rate: None,
            stopped_reason: None,
            follow_updated_s: updated,
            verification: None,
            tables: vec![],
        }
    }

    #[test]
    fn a_worker_refused_by_the_source_ends_the_wait_after_a_grace() {
        let report = |state: &str, since_s: f64, age_s: f64| store::WorkerReport {
            state: state.into(),
            detail: "password authentication failed for user \"app\"".into(),
            since_s,
            age_s,
        };
        assert!(stuck(&report("running", 600.0, 1.0)).is_none());
        assert!(
            stuck(&report("source-unreachable", 20.0, 1.0)).is_none(),
            "grace"
        );
        assert!(
            stuck(&report("source-unreachable", 600.0, 900.0)).is_none(),
            "stale"
        );
        let e = stuck(&report("source-unreachable", 75.0, 5.0)).expect("stuck");
        assert!(
            e.to_string().contains("cannot reach the source")
                && e.to_string().contains("password authentication failed"),
            "{e}"
        );
    }

    #[test]
    fn ready_only_when_copied_caught_up_and_recent() {
        assert!(ready(&status("copied", true, Some(1.0))));
        assert!(!ready(&status("copying", true, Some(1.0))), "still copying");
        assert!(!ready(&status("copied", false, Some(1.0))), "backlog");
        assert!(
            !ready(&status("copied", true, Some(120.0))),
            "stale follower"
        );
        assert!(!ready(&status("copied", true, None)), "never followed");
        let mut stopped = status("copied", true, Some(1.0));
        stopped.stopped_reason = Some("interrupted".into());
        assert!(!ready(&stopped), "stopped follower");
    }
}
