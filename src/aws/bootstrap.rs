//! The worker's bootstrap state: what its user-data is doing, or why it stopped. The script
//! PUTs a small JSON object (`{"state", "at", "detail"}`) to [`STATE_KEY`] in the migration's
//! private bucket through a presigned URL at each stage; the laptop reads it with
//! s3:GetObject (already in the operator policy), so `migrate` can say what the worker does
//! while it waits, fail early with the reason, and a re-run can replace a worker that never
//! started.
//!
//! Also decided here, as pure functions: whether the credentials live long enough for the
//! presigned URLs, and whether an existing worker is kept or replaced.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::errors::{code, sdk};
use super::Aws;
use crate::error::{Error, Result};

/// The object the worker writes its bootstrap state to.
pub const STATE_KEY: &str = "jobs/bootstrap-state.json";

/// How long the presigned URLs of the worker's user-data stay valid: the fetches come first,
/// but the state reports run until the service starts (apt may wait 10 minutes for its lock).
pub const URL_LIFETIME: Duration = Duration::from_secs(3600);

/// A worker with no bootstrap state this long after its launch never started: a re-run
/// replaces it.
pub const SILENT_WORKER_GRACE: Duration = Duration::from_secs(30 * 60);

/// What the worker reported last.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
pub struct State {
    pub state: String,
    /// Unix seconds on the worker's clock.
    #[serde(default)]
    pub at: f64,
    #[serde(default)]
    pub detail: String,
}

impl State {
    /// Whether the bootstrap stopped for good (the script has exited without a service).
    pub fn failed(&self) -> bool {
        matches!(
            self.state.as_str(),
            "binary-checksum-wrong" | "fetch-failed" | "apt-failed" | "service-failed"
        )
    }

    /// What it means, in words.
    pub fn describe(&self) -> String {
        match self.state.as_str() {
            "fetching" => "fetching the job, the RDS CA bundle and the heroku2rds binary".into(),
            "installing-postgresql-client" => "installing the PostgreSQL client".into(),
            "starting-service" => "starting the heroku2rds-worker service".into(),
            "started" => "the heroku2rds-worker service started".into(),
            "binary-checksum-wrong" => "the heroku2rds binary's SHA-256 is wrong".into(),
            "fetch-failed" => {
                "downloading the job, the RDS CA bundle or the binary failed (the presigned URLs may have expired)".into()
            }
            "apt-failed" => "apt could not install the PostgreSQL client".into(),
            "service-failed" => "systemd did not start the heroku2rds-worker service".into(),
            other => format!("{other} ({})", self.detail),
        }
    }

    /// The error `migrate` stops with on a failed bootstrap.
    pub fn error(&self, worker: &str) -> Error {
        let fix = match self.state.as_str() {
            "binary-checksum-wrong" => "run `heroku2rds migrate` again: it terminates this worker, uploads the binary again and launches a new one; if it happens again, check that --worker-binary is not being rewritten while provision uploads it",
            "apt-failed" => "run `heroku2rds migrate` again: it terminates this worker and launches a new one (the bootstrap log is /var/log/heroku2rds-bootstrap.log on the worker, also in `aws ec2 get-console-output`)",
            _ => "run `heroku2rds migrate` again: it terminates this worker and launches a new one with fresh URLs (the bootstrap log is /var/log/heroku2rds-bootstrap.log on the worker, also in `aws ec2 get-console-output`)",
        };
        Error::other(format!(
            "worker bootstrap failed on {worker}: {}",
            self.describe()
        ))
        .with_fix(fix)
    }
}

/// Reads the worker's bootstrap state; `None` when it has reported nothing yet.
pub async fn read(aws: &Aws, bucket: &str) -> Result<Option<State>> {
    let got = aws
        .s3()
        .get_object()
        .bucket(bucket)
        .key(STATE_KEY)
        .send()
        .await;
    let out = match got {
        Ok(o) => o,
        Err(e) if matches!(code(&e), Some("NoSuchKey" | "NoSuchBucket")) => return Ok(None),
        Err(e) => return Err(sdk("s3:GetObject", e)),
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| Error::other("reading the worker's bootstrap state").with_source(e))?
        .into_bytes();
    // Written by the worker: a malformed object is reported as an unknown state.
    Ok(Some(serde_json::from_slice(&bytes).unwrap_or(State {
        state: "unreadable".into(),
        at: 0.0,
        detail: "the bootstrap state object is not JSON".into(),
    })))
}

/// Forgets the previous worker's state (before a new worker is launched).
pub async fn clear(aws: &Aws, bucket: &str) -> Result<()> {
    aws.s3()
        .delete_object()
        .bucket(bucket)
        .key(STATE_KEY)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sdk("s3:DeleteObject", e))
}

/// Refuses when credentials that sign the presigned URLs expire before the worker is done with
/// them: S3 refuses a URL presigned with temporary credentials once they expire, whatever its
/// own expiry says. `expiry` is `None` for long-term keys.
pub fn check_url_lifetime(
    now: SystemTime,
    expiry: Option<SystemTime>,
    needed: Duration,
) -> Result<()> {
    let Some(expiry) = expiry else {
        return Ok(());
    };
    let left = expiry.duration_since(now).unwrap_or_default();
    if left >= needed {
        return Ok(());
    }
    let minutes = |d: Duration| d.as_secs().div_ceil(60);
    let when = if left.is_zero() {
        "your AWS credentials have expired".to_string()
    } else {
        format!("your AWS credentials expire in {} minutes", minutes(left))
    };
    Err(Error::usage(format!(
        "{when}; the worker needs {} minutes of them to fetch its job and report its bootstrap (the presigned URLs die with the credentials)",
        minutes(needed)
    ))
    .with_fix("refresh them (aws sso login, or a new assumed-role session of at least 2 hours) and re-run; nothing was launched"))
}

/// What a re-run does with a worker that exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Terminate it and launch a new one, for this reason.
    Replace(String),
}

/// Keeps a worker unless its bootstrap failed, or it reported nothing for
/// [`SILENT_WORKER_GRACE`] after its launch (`age`; unknown: kept).
pub fn verdict(state: Option<&State>, age: Option<Duration>) -> Verdict {
    match state {
        Some(s) if s.failed() => {
            Verdict::Replace(format!("its bootstrap failed: {}", s.describe()))
        }
        Some(_) => Verdict::Keep,
        None => match age {
            Some(a) if a >= SILENT_WORKER_GRACE => Verdict::Replace(format!(
                "it reported no bootstrap state in the {} minutes since its launch",
                a.as_secs() / 60
            )),
            _ => Verdict::Keep,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(s: &str) -> State {
        State {
            state: s.into(),
            at: 1.0,
            detail: String::new(),
        }
    }

    #[test]
    fn url_lifetime_against_the_credentials() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert!(
            check_url_lifetime(now, None, hour).is_ok(),
            "long-term keys"
        );
        assert!(check_url_lifetime(now, Some(now + hour), hour).is_ok());
        assert!(check_url_lifetime(now, Some(now + 2 * hour), hour).is_ok());
        let short = check_url_lifetime(now, Some(now + Duration::from_secs(9 * 60)), hour)
            .expect_err("9 minutes left");
        let text = format!("{short:#}");
        assert!(text.contains("expire in 9 minutes"), "{text}");
        assert!(text.contains("needs 60 minutes"), "{text}");
        assert!(short.fix().is_some_and(|f| f.contains("aws sso login")));
        assert_eq!(short.kind(), crate::error::Kind::Usage);
        let gone = check_url_lifetime(now, Some(now - hour), hour).expect_err("expired");
        assert!(format!("{gone:#}").contains("have expired"), "{gone:#}");
    }

    #[test]
    fn workers_are_replaced_only_when_their_bootstrap_failed_or_stayed_silent() {
        let young = Some(Duration::from_secs(60));
        let old = Some(SILENT_WORKER_GRACE + Duration::from_secs(1));
        for s in [
            "fetching",
            "installing-postgresql-client",
            "starting-service",
            "started",
        ] {
            assert_eq!(verdict(Some(&state(s)), old), Verdict::Keep, "{s}");
        }
        for s in [
            "binary-checksum-wrong",
            "fetch-failed",
            "apt-failed",
            "service-failed",
        ] {
            assert!(
                matches!(verdict(Some(&state(s)), young), Verdict::Replace(_)),
                "{s}"
            );
        }
        assert_eq!(verdict(None, young), Verdict::Keep);
        assert_eq!(verdict(None, None), Verdict::Keep);
        assert!(
            matches!(verdict(None, old), Verdict::Replace(r) if r.contains("no bootstrap state"))
        );
    }

    #[test]
    fn failed_states_say_what_to_do() {
        let e = state("binary-checksum-wrong").error("i-1");
        assert!(format!("{e:#}").contains("SHA-256 is wrong"), "{e:#}");
        assert!(e.fix().is_some_and(|f| f.contains("migrate` again")));
    }
}
