//! The archive bucket made private: public access blocked, encryption on, TLS-only policy.

use super::*;

pub(super) async fn secure_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    migration: &str,
) -> Result<()> {
    use aws_sdk_s3::types::{
        PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
        ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tagging,
    };
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| sdk("s3:PutBucketPublicAccessBlock", e))?;
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(|e| Error::other("building the encryption rule").with_source(e))?;
    let conf = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(by_default)
                .build(),
        )
        .build()
        .map_err(|e| Error::other("building the encryption rule").with_source(e))?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(conf)
        .send()
        .await
        .map_err(|e| sdk("s3:PutEncryptionConfiguration", e))?;
    let tag = aws_sdk_s3::types::Tag::builder()
        .key(TAG_KEY)
        .value(migration)
        .build()
        .map_err(|e| Error::other("building the bucket tag").with_source(e))?;
    s3.put_bucket_tagging()
        .bucket(bucket)
        .tagging(
            Tagging::builder()
                .tag_set(tag)
                .build()
                .map_err(|e| Error::other("building the bucket tags").with_source(e))?,
        )
        .send()
        .await
        .map_err(|e| sdk("s3:PutBucketTagging", e))?;
    Ok(())
}
