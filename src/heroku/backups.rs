//! Heroku Postgres backups through the data API (PGBackups "transfers"): capture, progress,
//! signed download URL, and the download itself, which never carries the Heroku token.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;

use super::app::seg;
use super::client::{Api, Client, Request};
use super::poll::Pace;
use crate::error::{Error, Result};

/// A transfer (a backup) as the data API describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Transfer {
    /// Unique id.
    pub uuid: String,
    /// Number within the app (`b005` is 5).
    pub num: i64,
    /// Bytes of the dump so far (compressed; not a percentage of anything).
    #[serde(default)]
    pub processed_bytes: i64,
    /// Size of the database dumped.
    #[serde(default)]
    pub source_bytes: i64,
    /// True once finished successfully.
    #[serde(default)]
    pub succeeded: bool,
    /// Set once running.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Set once finished (successfully or not).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Set when canceled.
    #[serde(default)]
    pub canceled_at: Option<String>,
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not started.
    Pending,
    /// Dumping.
    Running,
    /// Finished successfully.
    Completed,
    /// Canceled.
    Canceled,
    /// Finished without success.
    Failed,
}

impl Transfer {
    /// The name the CLI shows (`b005`).
    pub fn label(&self) -> String {
        format!("b{:03}", self.num)
    }

    /// Its status, derived as the Heroku CLI derives it.
    pub fn status(&self) -> Status {
        if self.succeeded {
            Status::Completed
        } else if self.canceled_at.is_some() {
            Status::Canceled
        } else if self.finished_at.is_some() {
            Status::Failed
        } else if self.started_at.is_some() {
            Status::Running
        } else {
            Status::Pending
        }
    }
}

/// Parses a backup id as the CLI shows it (`b005`, `a012`) or a bare number.
pub fn parse_backup_id(s: &str) -> Result<i64> {
    let digits = s.trim_start_matches(['a', 'b']);
    digits
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0 && !digits.is_empty())
        .ok_or_else(|| {
            Error::usage(format!("`{s}` is not a backup id"))
                .with_fix("use the id `heroku pg:backups` shows, such as b005")
        })
}

#[derive(Deserialize)]
struct PublicUrl {
    url: String,
}

/// The backups of one database add-on, billed to `app`.
pub struct Backups<'a> {
    client: &'a Client,
    app: String,
    addon_id: String,
}

impl<'a> Backups<'a> {
    /// Backups of add-on `addon_id`, whose billing app is `app`.
    pub fn new(client: &'a Client, app: &str, addon_id: &str) -> Self {
        Backups {
            client,
            app: app.to_string(),
            addon_id: addon_id.to_string(),
        }
    }

    /// Starts a backup. Not retried on an unknown outcome (it would start a second one).
    pub async fn capture(&self) -> Result<Transfer> {
        self.client
            .send(&Request::new(
                Method::POST,
                Api::Data,
                format!("/client/v11/databases/{}/backups", seg(&self.addon_id)),
            ))
            .await
    }

    /// One transfer by uuid or number.
    pub async fn transfer(&self, id: &str) -> Result<Transfer> {
        self.client
            .send(&Request::new(
                Method::GET,
                Api::Data,
                format!("/client/v11/apps/{}/transfers/{}", seg(&self.app), seg(id)),
            ))
            .await
    }

    /// Polls until the transfer finishes, reporting each poll; bounded by `timeout`. `pace`
    /// spaces the polls: [`Pace::backups`] for a real wait, or a fixed `Duration`.
    pub async fn wait<'p>(
        &self,
        id: &str,
        pace: impl Into<Pace<'p>>,
        timeout: Duration,
        mut progress: impl FnMut(&Transfer),
    ) -> Result<Transfer> {
        let mut pace = pace.into();
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.transfer(id).await?;
            progress(&t);
            match t.status() {
                Status::Completed => return Ok(t),
                Status::Failed | Status::Canceled => return Err(Error::other(format!(
                    "backup {} {}",
                    t.label(),
                    if t.status() == Status::Failed {
                        "failed"
                    } else {
                        "was canceled"
                    }
                ))
                .with_fix(
                    "`heroku pg:backups:info` shows its logs; capture again, or use --via pg_dump",
                )),
                Status::Pending | Status::Running => {}
            }
            if Instant::now() > deadline {
                return Err(Error::other(format!(
                    "backup {} did not finish within {}s",
                    t.label(),
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(pace.next_delay()).await;
        }
    }

    /// A fresh signed download URL of a finished backup (valid about an hour). The URL is a
    /// credential: never log it.
    pub async fn public_url(&self, num: i64) -> Result<String> {
        let u: PublicUrl = self
            .client
            .send(
                &Request::new(
                    Method::POST,
                    Api::Data,
                    format!(
                        "/client/v11/apps/{}/transfers/{num}/actions/public-url",
                        seg(&self.app)
                    ),
                )
                // Each call only signs another URL.
                .idempotent(),
            )
            .await?;
        Ok(u.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids() {
        assert_eq!(parse_backup_id("b005").ok(), Some(5));
        assert_eq!(parse_backup_id("a012").ok(), Some(12));
        assert_eq!(parse_backup_id("17").ok(), Some(17));
        for bad in ["", "b", "bx1", "b0", "r003", "-1"] {
            assert!(parse_backup_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses() {
        let t = |succeeded, started: bool, finished: bool, canceled: bool| Transfer {
            uuid: String::new(),
            num: 1,
            processed_bytes: 0,
            source_bytes: 0,
            succeeded,
            started_at: started.then(String::new),
            finished_at: finished.then(String::new),
            canceled_at: canceled.then(String::new),
        };
        assert_eq!(t(false, false, false, false).status(), Status::Pending);
        assert_eq!(t(false, true, false, false).status(), Status::Running);
        assert_eq!(t(true, true, true, false).status(), Status::Completed);
        assert_eq!(t(false, true, true, false).status(), Status::Failed);
        assert_eq!(t(false, true, true, true).status(), Status::Canceled);
        assert_eq!(t(false, false, false, false).label(), "b001");
    }
}
