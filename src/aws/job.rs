//! The worker's job description: what `heroku2rds worker --job FILE` runs. Provision writes it
//! to the private archive bucket; the EC2 worker fetches it once through a presigned URL. It
//! holds the two database URLs, so it is never logged, printed or put in user-data.
//!
//! # A changed source URL
//!
//! Heroku rotates credentials and moves databases to other hosts (maintenance, failover); the
//! app's `DATABASE_URL` changes and the URL in the worker's job stops working. The worker has no
//! AWS credentials (no instance role) and the presigned URLs of its first boot have long
//! expired, so it cannot read a newer job from the bucket, and replacing the instance (or
//! stopping it to change its user-data, which cloud-init runs only once) is heavy. But both the
//! operator's machine and the worker reach the TARGET database. So a re-run of `migrate` or
//! `provision` that finds the app's URL differing from the job's stores the new URL on the
//! target, in `heroku2rds.worker_source`, sealed (ChaCha20-Poly1305) with [`Job::source_key`], a
//! random key that only the job holds (in the private bucket and on the worker's disk): whoever
//! reads the target cannot use it. The worker reads that record when it starts and whenever its
//! run fails (a rotated password is refused at the next connection; a moved host stops
//! answering), switches to the newer URL in the same process and resumes from the target's
//! records; nothing is copied again. The job in the bucket is rewritten too, so the next
//! comparison (and a replacement worker) starts from the current URL.

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
    /// 32 random bytes (hex) sealing a newer source URL handed over through the target (see the
    /// module's documentation). Secret. Jobs written before it existed have none.
    #[serde(default)]
    pub source_key: Option<String>,
}

/// What a sealed source URL is bound to, besides the key (a record cannot be moved to another
/// migration's job).
const SEAL_CONTEXT: &[u8] = b"heroku2rds worker source v1:";

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("version", &self.version)
            .field("migration", &self.migration)
            .field("source_url", &"<redacted>")
            .field("target_url", &"<redacted>")
            .field("jobs", &self.jobs)
            .field("keyless", &self.keyless)
            .field(
                "source_key",
                &self.source_key.as_ref().map(|_| "<redacted>"),
            )
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

    /// A job read back from the bucket (nothing of it in the error: it holds secrets).
    pub fn from_bytes(bytes: &[u8]) -> Result<Job> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::other(format!(
                "the worker's job in the bucket is not a heroku2rds job (line {}, column {})",
                e.line(),
                e.column()
            ))
            .with_fix(
                "`heroku2rds teardown` (the database stays) then provision again writes a new one",
            )
        })
    }

    /// A new random [`Job::source_key`].
    pub fn new_source_key() -> Result<String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| Error::other(format!("the system random generator failed: {e}")))?;
        Ok(hex::encode(key))
    }

    fn sealing_key(&self) -> Option<ring::aead::LessSafeKey> {
        let key = hex::decode(self.source_key.as_deref()?).ok()?;
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).ok()?;
        Some(ring::aead::LessSafeKey::new(unbound))
    }

    fn seal_aad(&self) -> Vec<u8> {
        [SEAL_CONTEXT, self.migration.as_bytes()].concat()
    }

    /// A short public name of the key (the first 8 bytes of its SHA-256, hex): which job a
    /// sealed record belongs to, without revealing the key.
    pub fn source_key_id(&self) -> Option<String> {
        use sha2::Digest;
        let key = self.source_key.as_deref()?;
        Some(hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8]))
    }

    /// `url` sealed with the job's key: a random nonce followed by the ciphertext and its tag.
    /// `None` when the job has no (valid) key.
    pub fn seal_source(&self, url: &str) -> Result<Option<Vec<u8>>> {
        let Some(key) = self.sealing_key() else {
            return Ok(None);
        };
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::other(format!("the system random generator failed: {e}")))?;
        let mut data = url.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(self.seal_aad()),
            &mut data,
        )
        .map_err(|_| Error::other("sealing the source URL failed"))?;
        Ok(Some([nonce.as_slice(), &data].concat()))
    }

    /// The URL in a record sealed by [`Job::seal_source`] with this job's key; `None` when it
    /// was sealed with another key (an older worker's job), altered, or this job has no key.
    pub fn open_source(&self, sealed: &[u8]) -> Option<String> {
        let key = self.sealing_key()?;
        if sealed.len() < ring::aead::NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(ring::aead::NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = body.to_vec();
        let plain = key
            .open_in_place(nonce, ring::aead::Aad::from(self.seal_aad()), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: Option<String>) -> Job {
        Job {
            version: JOB_VERSION,
            migration: "acme".into(),
            source_url: "postgresql://u:old@h/d".into(),
            target_url: "postgresql://m:pw@t/app".into(),
            jobs: None,
            keyless: KeylessMode::Error,
            verify_rate: None,
            source_key: key,
        }
    }

    #[test]
    fn a_sealed_source_opens_with_its_job_only() {
        let a = job(Some(Job::new_source_key().unwrap()));
        let url = "postgresql://u:new-secret@h2/d?sslmode=require";
        let sealed = a.seal_source(url).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("new-secret"));
        assert_eq!(a.open_source(&sealed).as_deref(), Some(url));
        // Twice sealed, two different records (random nonces), both open.
        let again = a.seal_source(url).unwrap().unwrap();
        assert_ne!(sealed, again);
        assert_eq!(a.open_source(&again).as_deref(), Some(url));
        // Another job's key, another migration, an altered byte, a short record, no key.
        let b = job(Some(Job::new_source_key().unwrap()));
        assert_eq!(b.open_source(&sealed), None);
        let other_migration = Job {
            migration: "other".into(),
            ..a.clone()
        };
        assert_eq!(other_migration.open_source(&sealed), None);
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(a.open_source(&altered), None);
        assert_eq!(a.open_source(&sealed[..5]), None);
        assert_eq!(job(None).open_source(&sealed), None);
        assert!(job(None).seal_source(url).unwrap().is_none());
        assert_ne!(a.source_key_id(), b.source_key_id());
    }

    #[test]
    fn debug_shows_no_secret() {
        let a = job(Some(Job::new_source_key().unwrap()));
        let shown = format!("{a:?}");
        assert!(!shown.contains("old") && !shown.contains("pw"), "{shown}");
        assert!(!shown.contains(a.source_key.as_deref().unwrap()), "{shown}");
        // A job written before source_key existed still reads.
        let old =
            r#"{"version":1,"migration":"m","source_url":"s","target_url":"t","keyless":"error"}"#;
        assert!(Job::from_bytes(old.as_bytes())
            .unwrap()
            .source_key
            .is_none());
    }
}
