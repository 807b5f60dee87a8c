//! `replicate` (between two URLs) and `worker` (the job provision wrote, on the EC2 worker).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::jobs_zero;
use crate::aws::job::Job;
use crate::cli::render::{self, Mode};
use crate::cli::{signals, ReplicateArgs, WorkerArgs};
use crate::error::{Error, Kind, Result};
use crate::pg::conn::ConnSpec;
use crate::pg::progress::{Event, Sink};
use crate::pg::{replicate, status};

/// How often progress is read off the target while replicating.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub async fn run(a: ReplicateArgs) -> Result<u8> {
    let source = ConnSpec::parse(&a.source.source, "source")?;
    let target = ConnSpec::parse(&a.target.target, "target")?;
    if a.chunk_mb == 0 {
        return Err(Error::usage("--chunk-mb must be at least 1")
            .with_fix("leave --chunk-mb out (64 MB chunks), or give a size of 1 or more"));
    }
    if a.jobs == Some(0) {
        return Err(jobs_zero());
    }
    let opts = replicate::Options {
        jobs: a.jobs.unwrap_or(0),
        keyless: a.keyless.into(),
        chunk_bytes: i64::from(a.chunk_mb) << 20,
        until: a.until.into(),
        lock_timeout: Duration::from_millis(a.lock_timeout_ms.max(10)),
        capture_max_wait: Duration::from_secs(a.capture_max_wait_s),
        batch: a.batch.max(1),
        verify_rate: verify_rate(a.verify_rate_mb)?,
    };
    replicate(source, target, opts, signals::cancellation()).await
}

/// `--verify-rate-mb` in bytes per second.
pub fn verify_rate(mb: f64) -> Result<u64> {
    if !mb.is_finite() || mb < 0.0 {
        return Err(Error::usage(format!("--verify-rate-mb {mb} is not a rate"))
            .with_fix("give megabytes per second, e.g. --verify-rate-mb 4 (0 turns background verification off)"));
    }
    Ok((mb * 1e6) as u64)
}

/// The EC2 worker's service: the job's replication, following changes until the cutover. When
/// a run fails, a newer source URL handed over through the target (see `aws::job`) is taken
/// and the run resumes with it in this process; when there is none and the source refuses
/// this URL (rotated password) or cannot be reached (moved host), the worker exits 5 so that
/// systemd starts it again in 10 s, and each start looks for a newer URL first.
pub async fn worker(a: WorkerArgs) -> Result<u8> {
    let job = Job::load(&a.job)?;
    let target = ConnSpec::parse(&job.target_url, "target")?;
    tracing::info!("running the job of migration {}", job.migration);
    let opts = replicate::Options {
        jobs: job.jobs.unwrap_or(0),
        keyless: job.keyless,
        chunk_bytes: 64 << 20,
        until: replicate::Until::Forever,
        lock_timeout: Duration::from_secs(1),
        capture_max_wait: Duration::from_secs(900),
        batch: 5000,
        verify_rate: job
            .verify_rate
            .unwrap_or(crate::pg::verify::ranges::DEFAULT_RATE),
    };
    let cancel = signals::cancellation();
    let mut source_url = job.source_url.clone();
    let mut generation = 0;
    if let Some((g, url)) = newer_source(&job, &target, generation).await {
        tracing::info!("the job's source URL is outdated: using the one handed over through the target (generation {g})");
        (source_url, generation) = (url, g);
    }
    used_source(&job, &target, generation).await;
    // The laptop cannot read this machine's journal: a source that refuses the URL is reported
    // on the target too, where `migrate` and `status` read it.
    match ConnSpec::parse(&source_url, "source")?.connect().await {
        Err(refused) if refused.kind() == Kind::Refused || refused.is_transient() => {
            report(&target, "source-unreachable", &refused.to_string()).await;
            return Err(source_refused(refused));
        }
        _ => report(&target, "running", "").await,
    }
    loop {
        let source = ConnSpec::parse(&source_url, "source")?;
        let ran = replicate(source.clone(), target.clone(), opts.clone(), cancel.clone()).await;
        let Err(e) = ran else { return ran };
        if cancel.is_cancelled() {
            return Err(e);
        }
        if let Some((g, url)) = newer_source(&job, &target, generation).await {
            tracing::warn!("{e:#}; a new source URL was handed over (generation {g}): resuming with it (completed work is kept)");
            (source_url, generation) = (url, g);
            used_source(&job, &target, generation).await;
            report(&target, "running", "").await;
            continue;
        }
        return match source.connect().await {
            Err(refused) if refused.kind() == Kind::Refused || refused.is_transient() => {
                report(&target, "source-unreachable", &refused.to_string()).await;
                Err(source_refused(refused))
            }
            _ => Err(e),
        };
    }
}

fn source_refused(refused: Error) -> Error {
    Error::other(format!(
        "the source database does not accept the worker's URL: {refused}"
    ))
    .with_fix("Heroku rotated the credentials or moved the database: run `heroku2rds migrate` (or `provision`) again on your machine; it hands the app's current DATABASE_URL to this worker through the target database, and the worker (restarted by systemd every 10 s) resumes with it")
}

/// Records the worker's state on the target (best effort: the journal has it anyway).
async fn report(target: &ConnSpec, state: &str, detail: &str) {
    let write = async {
        let c = target.connect().await?;
        crate::pg::store::record_worker_report(&c, state, detail).await
    };
    if let Err(e) = write.await {
        tracing::warn!("cannot record the worker's state on the target: {e:#}");
    }
}

/// A source URL newer than `generation`, sealed for this job's key, from the target; `None`
/// when there is none or the target cannot be read (the caller goes on as it would without).
async fn newer_source(job: &Job, target: &ConnSpec, generation: i32) -> Option<(i32, String)> {
    let key_id = job.source_key_id()?;
    let read = async {
        let c = target.connect().await?;
        crate::pg::store::worker_source(&c).await
    };
    match read.await {
        Ok(Some(rec)) if rec.key_id == key_id && rec.generation > generation => {
            match job.open_source(&rec.sealed) {
                Some(url) => Some((rec.generation, url)),
                None => {
                    tracing::warn!("the source record on the target does not open with this job's key; ignoring it");
                    None
                }
            }
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("cannot read the source record on the target: {e:#}");
            None
        }
    }
}

/// Records on the target which source this worker runs on (for `status`); best effort.
async fn used_source(job: &Job, target: &ConnSpec, generation: i32) {
    let Some(key_id) = job.source_key_id() else {
        return;
    };
    let write = async {
        let c = target.connect().await?;
        crate::pg::store::record_worker_source_used(&c, &key_id, generation).await
    };
    if let Err(e) = write.await {
        tracing::warn!("cannot record the worker's source on the target: {e:#}");
    }
}

/// Reads progress off the target every [`PROGRESS_EVERY`] and shows it, until `stop`.
async fn watch_progress(target: ConnSpec, sink: Arc<dyn Sink>, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = &mut stop => return,
            read = status::read(&target) => match read {
                Ok(s) => sink.emit(Event::Snapshot(Box::new(s))),
                // No migration recorded yet: replicate is still capturing or planning.
                Err(e) if e.kind() == Kind::Usage => sink.waiting("starting replication"),
                Err(e) => tracing::debug!("reading progress: {e}"),
            },
        }
    }
}

async fn replicate(
    source: ConnSpec,
    target: ConnSpec,
    opts: replicate::Options,
    cancel: crate::cancel::Cancel,
) -> Result<u8> {
    let until = opts.until;
    let source = source.with_application_name(replicate::SOURCE_APPLICATION_NAME);
    // Bars on a terminal only. Elsewhere (pipes, systemd's journal, tests) the logs say what
    // happens and `heroku2rds status` reads progress: no extra lines, no extra connections.
    let mode = Mode::detect(false);
    let sink: Option<Arc<dyn Sink>> =
        (mode == Mode::Terminal).then(|| Arc::from(render::sink(mode)));
    let watcher = sink.clone().map(|sink| {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(watch_progress(target.clone(), sink, stopped));
        (stop, task)
    });
    let ran = replicate::run(&source, &target, &opts, cancel).await;
    if let Some((stop, task)) = watcher {
        let _ = stop.send(());
        let _ = task.await;
    }
    let outcome = ran?;
    if let Some(sink) = &sink {
        if let Ok(s) = status::read(&target).await {
            sink.emit(Event::Finished(Box::new(s)));
        }
    }
    drop(sink);
    if outcome.applied.changes > 0 || until != replicate::Until::Copied {
        println!(
            "applied {} change(s): {} key(s) rewritten, {} truncate(s){}",
            outcome.applied.changes,
            outcome.applied.keys,
            outcome.applied.truncates,
            if outcome.interrupted {
                "; stopped by a signal, re-run to continue"
            } else {
                "; caught up"
            }
        );
    }
    if outcome.already_done {
        println!("nothing to do: the target already holds a complete copy (run `heroku2rds verify` to compare)");
    } else if outcome.copied.chunks > 0 {
        println!(
            "copied {} rows ({:.1} MB) in {} chunks with {} workers; the target is complete",
            outcome.copied.rows,
            outcome.copied.bytes as f64 / 1e6,
            outcome.copied.chunks,
            outcome.jobs
        );
    }
    Ok(0)
}
