//! Streaming an archive into the migration's bucket by S3 multipart upload, with bounded memory:
//! one part (16 MiB) is buffered at a time, nothing touches the local disk. The byte count and a
//! SHA-256 are computed while streaming and end up in the object's metadata
//! (`x-amz-meta-bytes`, `x-amz-meta-sha256`).
//!
//! An upload that does not complete is aborted ([`PartWriter::abort`]): S3 would otherwise keep
//! (and bill) its parts. A re-run starts a fresh upload under a new key.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::BytesMut;
use sha2::{Digest, Sha256};

use super::errors::sdk;
use super::observe::{self, Found};
use super::Aws;
use crate::error::{Error, Kind, Result};

/// Size of each uploaded part (the last may be smaller). S3 allows 5 MiB to 5 GiB and at most
/// 10,000 parts: 16 MiB parts cover archives up to about 156 GiB.
pub const PART_SIZE: usize = 16 * 1024 * 1024;
/// Largest part S3 accepts, used when parts must grow (larger archives) and for the copy.
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
const MAX_PARTS: i32 = 10_000;

/// Checks that `bucket` exists and carries the migration's tag; says to run provision otherwise.
pub async fn check_bucket(aws: &Aws, bucket: &str, migration: &str) -> Result<()> {
    let provision = format!(
        "run `heroku2rds provision --name {migration} --region {}` first: it creates the archive bucket",
        aws.region()
    );
    match observe::bucket(aws, bucket, migration).await? {
        Found::Ours(b) if b.tagged => Ok(()),
        Found::Ours(_) => Err(Error::usage(format!(
            "the archive bucket s3://{bucket} exists but is not tagged yet (an interrupted provision)"
        ))
        .with_fix(provision)),
        Found::Missing => Err(Error::usage(format!(
            "migration {migration} has no archive bucket (s3://{bucket} does not exist in {})",
            aws.region()
        ))
        .with_fix(provision)),
        Found::Foreign { reason } => Err(Error::new(Kind::Refused, reason)
            .with_fix("check --name and --region: they must be the ones provision used")),
    }
}

/// What was archived.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub bucket: String,
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    /// Parts uploaded.
    #[serde(skip)]
    pub parts: i32,
}

/// A multipart upload in progress: buffers one part, hashes and counts every byte.
pub struct PartWriter {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    metadata: Vec<(String, String)>,
    buf: BytesMut,
    part_size: usize,
    done: Vec<CompletedPart>,
    sha: Sha256,
    bytes: u64,
}

impl PartWriter {
    /// Starts a multipart upload of `key` in `bucket`; `metadata` becomes `x-amz-meta-*`
    /// (with `bytes` and `sha256` added at the end). `expected` sizes the parts when known.
    pub async fn start(
        aws: &Aws,
        bucket: &str,
        key: &str,
        metadata: Vec<(String, String)>,
        expected: Option<u64>,
    ) -> Result<PartWriter> {
        let s3 = aws.s3();
        let mut req = s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream");
        for (k, v) in &metadata {
            req = req.metadata(k, v);
        }
        let out = req
            .send()
            .await
            .map_err(|e| sdk("s3:PutObject", e).context("starting the multipart upload"))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| Error::other("S3 started a multipart upload without an upload id"))?
            .to_string();
        let part_size = part_size_for(expected);
        Ok(PartWriter {
            s3,
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id,
            metadata,
            buf: BytesMut::with_capacity(part_size),
            part_size,
            done: Vec::new(),
            sha: Sha256::new(),
            bytes: 0,
        })
    }

    /// Bytes accepted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Parts uploaded so far.
    pub fn parts(&self) -> usize {
        self.done.len()
    }

    /// Accepts more data; uploads a part whenever one is full (one part in memory at a time).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.sha.update(data);
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            let room = self.part_size - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.part_size {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let n = i32::try_from(self.done.len() + 1).unwrap_or(i32::MAX);
        if n > MAX_PARTS {
            return Err(Error::other(format!(
                "the archive is larger than {MAX_PARTS} parts of {} MiB",
                self.part_size >> 20
            ))
            .with_fix("archive through --via backup, whose size is known in advance"));
        }
        let part = std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.part_size));
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(n)
            .body(ByteStream::from(part.freeze()))
            .send()
            .await
            .map_err(|e| sdk("s3:PutObject", e).context(format!("uploading part {n}")))?;
        self.done.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
        tracing::info!(
            "uploaded part {n} ({} MiB so far)",
            self.bytes.saturating_sub(self.buf.len() as u64) >> 20
        );
        Ok(())
    }

    /// Uploads the last part, completes the upload, then records the byte count and SHA-256 in
    /// the object's metadata (a server-side copy onto itself: S3 fixes metadata at creation).
    /// `check` sees the byte count before completion: an error from it aborts the upload.
    pub async fn finish(mut self, check: impl FnOnce(u64) -> Result<()>) -> Result<Stored> {
        let sha = hex::encode(self.sha.clone().finalize());
        if let Err(e) = check(self.bytes) {
            return Err(self.abort_with(e).await);
        }
        if !self.buf.is_empty() || self.done.is_empty() {
            if let Err(e) = self.flush().await {
                return Err(self.abort_with(e).await);
            }
        }
        let completed = self
            .s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.done.clone()))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = completed {
            let e = sdk("s3:PutObject", e).context("completing the multipart upload");
            return Err(self.abort_with(e).await);
        }
        let mut meta = self.metadata.clone();
        meta.push(("bytes".into(), self.bytes.to_string()));
        meta.push(("sha256".into(), sha.clone()));
        set_metadata(&self.s3, &self.bucket, &self.key, self.bytes, &meta)
            .await
            .map_err(|e| {
                e.context(format!(
                    "the archive s3://{}/{} is complete, but its checksum could not be recorded",
                    self.bucket, self.key
                ))
            })?;
        Ok(Stored {
            bucket: self.bucket,
            key: self.key,
            bytes: self.bytes,
            sha256: sha,
            parts: i32::try_from(self.done.len()).unwrap_or(i32::MAX),
        })
    }

    /// Aborts the upload (S3 drops its parts) and returns `e` saying so.
    pub async fn abort_with(&self, e: Error) -> Error {
        match self.abort().await {
            Ok(()) => e.context(format!(
                "aborted the multipart upload of s3://{}/{} (nothing was stored; re-run to start afresh)",
                self.bucket, self.key
            )),
            Err(a) => e.context(format!(
                "could not abort the multipart upload {} of s3://{}/{} ({}); `heroku2rds teardown --delete-target` or a lifecycle rule removes it",
                self.upload_id, self.bucket, self.key, a
            )),
        }
    }

    async fn abort(&self) -> Result<()> {
        self.s3
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| sdk("s3:AbortMultipartUpload", e))?;
        Ok(())
    }
}

/// The complete archive stored at `key` (its SHA-256 recorded), if any. An object without the
/// checksum is the remains of a run killed between completing and recording: not complete.
pub async fn find_complete(aws: &Aws, bucket: &str, key: &str) -> Result<Option<Stored>> {
    let head = aws.s3().head_object().bucket(bucket).key(key).send().await;
    let head = match head {
        Ok(h) => h,
        Err(aws_sdk_s3::error::SdkError::ServiceError(se)) if se.err().is_not_found() => {
            return Ok(None)
        }
        Err(e) => return Err(sdk("s3:GetObject", e)),
    };
    let meta = head.metadata();
    let sha = meta.and_then(|m| m.get("sha256")).cloned();
    let bytes = meta
        .and_then(|m| m.get("bytes"))
        .and_then(|b| b.parse::<u64>().ok());
    Ok(match (sha, bytes) {
        (Some(sha256), Some(bytes)) => Some(Stored {
            bucket: bucket.to_string(),
            key: key.to_string(),
            bytes,
            sha256,
            parts: 0,
        }),
        _ => None,
    })
}

/// Aborts the unfinished multipart uploads under `prefix` (left by a run that was killed; S3
/// keeps and bills their parts). Returns how many.
pub async fn abort_unfinished(aws: &Aws, bucket: &str, prefix: &str) -> Result<usize> {
    let s3 = aws.s3();
    let listed = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .map_err(|e| sdk("s3:ListBucketMultipartUploads", e))?;
    let mut n = 0;
    for u in listed.uploads() {
        if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
            s3.abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| sdk("s3:AbortMultipartUpload", e))?;
            tracing::info!(
                "aborted an unfinished upload of s3://{bucket}/{key} left by an interrupted run"
            );
            n += 1;
        }
    }
    Ok(n)
}

/// Part size for an archive of `expected` bytes: 16 MiB, or larger when 10,000 parts would not
/// hold it.
pub fn part_size_for(expected: Option<u64>) -> usize {
    let needed = expected.map_or(0, |n| n.div_ceil(MAX_PARTS as u64 - 1));
    let size = needed.max(PART_SIZE as u64).min(MAX_PART);
    // Round up to a whole MiB.
    usize::try_from(size.div_ceil(1 << 20) << 20).unwrap_or(PART_SIZE)
}

/// Byte ranges (inclusive) of a multipart copy of `size` bytes in parts of at most `max`.
pub fn copy_ranges(size: u64, max: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + max).min(size) - 1;
        out.push((start, end));
        start = end + 1;
    }
    out
}

/// Replaces the object's metadata by copying it onto itself (a multipart copy above 5 GiB,
/// where a single copy is refused).
async fn set_metadata(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    meta: &[(String, String)],
) -> Result<()> {
    let source = format!("{bucket}/{}", copy_source_key(key));
    if size <= MAX_PART {
        let mut req = s3
            .copy_object()
            .bucket(bucket)
            .key(key)
            .copy_source(&source)
            .content_type("application/octet-stream")
            .metadata_directive(MetadataDirective::Replace);
        for (k, v) in meta {
            req = req.metadata(k, v);
        }
        req.send().await.map_err(|e| sdk("s3:PutObject", e))?;
        return Ok(());
    }
    let mut req = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/octet-stream");
    for (k, v) in meta {
        req = req.metadata(k, v);
    }
    let up = req.send().await.map_err(|e| sdk("s3:PutObject", e))?;
    let id = up.upload_id().unwrap_or_default().to_string();
    let mut parts = Vec::new();
    for (i, (a, b)) in copy_ranges(size, MAX_PART).into_iter().enumerate() {
        let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let out = s3
            .upload_part_copy()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .copy_source(&source)
            .copy_source_range(format!("bytes={a}-{b}"))
            .send()
            .await;
        match out {
            Ok(o) => parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(
                        o.copy_part_result()
                            .and_then(|r| r.e_tag())
                            .map(str::to_string),
                    )
                    .build(),
            ),
            Err(e) => {
                let _ = s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&id)
                    .send()
                    .await;
                return Err(sdk("s3:PutObject", e));
            }
        }
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| sdk("s3:PutObject", e))?;
    Ok(())
}

/// A key as `x-amz-copy-source` wants it: URL-encoded, `/` kept.
fn copy_source_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes() {
        assert_eq!(part_size_for(None), PART_SIZE);
        assert_eq!(part_size_for(Some(1)), PART_SIZE);
        assert_eq!(part_size_for(Some(100 << 30)), PART_SIZE);
        // 1 TiB needs parts over 16 MiB: still at most 10,000 of them.
        let big = 1u64 << 40;
        let p = part_size_for(Some(big)) as u64;
        assert!(p > PART_SIZE as u64 && big.div_ceil(p) <= 10_000, "{p}");
        assert_eq!(part_size_for(Some(u64::MAX)) as u64, MAX_PART);
    }

    #[test]
    fn ranges() {
        assert_eq!(copy_ranges(0, 5), vec![]);
        assert_eq!(copy_ranges(5, 5), vec![(0, 4)]);
        assert_eq!(copy_ranges(11, 5), vec![(0, 4), (5, 9), (10, 10)]);
        assert_eq!(
            copy_source_key("archive/a b+c.dump"),
            "archive/a%20b%2Bc.dump"
        );
    }
}
