//! The worker's job description: what `heroku2rds worker --job FILE` runs. Provision writes it
//! to the private archive bucket; the EC2 worker fetches it once through a presigned URL. It
//! holds the two database URLs, so it is never logged, printed or put in user-data.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::preflight::KeylessMode;

/// The format version this binary writes and reads.
pub const JOB_VERSION: u32 = 1;

/// A worker's job.
#[derive(Clone, Serialize, Deserialize)]
pub struct Job {
    /// Format version.
    pub version: u32,
    /// The migration's name.
    pub migration: String,
    /// Source database URL (secret).
    pub source_url: String,
    /// Target database URL (secret).
    pub target_url: String,
    /// Parallel copy workers; `None` picks from cores.
    #[serde(default)]
    pub jobs: Option<usize>,
    /// Keyless table handling.
    pub keyless: KeylessMode,
    /// Background verification rate, bytes per second; `None` takes the default.
    #[serde(default)]
    pub verify_rate: Option<u64>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("version", &self.version)
            .field("migration", &self.migration)
            .field("source_url", &"<redacted>")
            .field("target_url", &"<redacted>")
            .field("jobs", &self.jobs)
            .field("keyless", &self.keyless)
            .finish()
    }
}

impl Job {
    /// Reads and checks a job file.
    pub fn load(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!("cannot read the job file {}", path.display()))
                .with_fix("give the path provision wrote the job to (on the worker: /etc/heroku2rds/job.json)")
                .with_source(e)
        })?;
        let job: Job = serde_json::from_str(&text).map_err(|e| {
            // serde's message may quote the input: keep only its position.
            Error::usage(format!(
                "the job file {} is not a heroku2rds job (line {}, column {})",
                path.display(),
                e.line(),
                e.column()
            ))
            .with_fix("give the job file provision wrote (on the worker: /etc/heroku2rds/job.json): JSON with version, migration, source_url, target_url and keyless")
        })?;
        if job.version != JOB_VERSION {
            return Err(Error::usage(format!(
                "the job file {} has format version {}; this heroku2rds reads version {JOB_VERSION}",
                path.display(),
                job.version
            ))
            .with_fix("install the heroku2rds version that wrote the job"));
        }
        Ok(job)
    }

    /// The job as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a job always serializes")
    }
}
