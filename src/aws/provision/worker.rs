//! The EC2 worker: its binary and job uploaded to the private bucket (or the binary left at the
//! operator's URL), the instance started with user-data that fetches both and reports its
//! bootstrap state through a presigned URL (see [`crate::aws::bootstrap`]); the URLs are minted
//! right before RunInstances, once the credentials are known to outlive them. On re-runs, a
//! changed source URL is handed to the running worker (see `aws::job`).

use super::*;

/// The SHA-256 of a file, read in 1 MiB pieces.
pub(super) fn sha256_file(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let fail = |e: std::io::Error| {
        Error::usage(format!("cannot read the worker binary {}", path.display())).with_source(e)
    };
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Uploads the job and the binary (unless the operator gave a URL for it), and starts the
/// instance with user-data pointing at both: presigned URLs valid for
/// [`bootstrap::URL_LIFETIME`] (refused when the credentials expire sooner), or the operator's
/// binary URL as given. The previous worker's bootstrap state is removed first.
pub(super) async fn launch_worker(
    aws: &Aws,
    spec: &Spec,
    names: &Names,
    worker_sg: &str,
    subnet: &str,
    job: &Job,
    binary: &crate::aws::setup::WorkerBinary,
) -> Result<String> {
    let w = spec
        .worker
        .as_ref()
        .ok_or_else(|| Error::other("launching a worker for a spec without one"))?;
    let ami = observe::ubuntu_ami(aws, &w.arch).await?.ok_or_else(|| {
        Error::other(format!(
            "no Ubuntu 24.04 LTS image for {} from Canonical in {}",
            w.arch, spec.region
        ))
        .with_fix("check the region, or choose --worker-arch amd64")
    })?;
    bootstrap::check_url_lifetime(
        std::time::SystemTime::now(),
        aws.credentials_expiry().await?,
        bootstrap::URL_LIFETIME,
    )?;
    let s3 = aws.s3();
    let job_key = JOB_KEY.to_string();
    let mut uploads = vec![(job_key.clone(), ByteStream::from(job.to_bytes()))];
    // An uploaded binary is presigned below; a URL given by the operator goes as it is.
    let (binary_key, given) = match binary {
        crate::aws::setup::WorkerBinary::Upload(path) => {
            let key = format!("jobs/heroku2rds-{}-{}", env!("CARGO_PKG_VERSION"), w.arch);
            let body = ByteStream::from_path(path).await.map_err(|e| {
                Error::usage(format!("cannot read the worker binary {}", path.display()))
                    .with_source(e)
            })?;
            uploads.push((key.clone(), body));
            (Some(key), None)
        }
        crate::aws::setup::WorkerBinary::Url { url, sha256 } => {
            (None, Some((url.clone(), sha256.clone())))
        }
    };
    let sha = match (binary, &given) {
        (crate::aws::setup::WorkerBinary::Upload(path), _) => sha256_file(path)?,
        (_, Some((_, sha))) => sha.clone(),
        _ => unreachable!("a binary is uploaded or given by URL"),
    };
    for (key, body) in uploads {
        put_private(&s3, &names.bucket, &key, body).await?;
    }
    bootstrap::clear(aws, &names.bucket).await?;
    // Minted last, right before RunInstances: their clock starts now.
    let conf = || {
        PresigningConfig::expires_in(bootstrap::URL_LIFETIME)
            .map_err(|e| Error::other("presigning").with_source(e))
    };
    let presign_get = |key: String| {
        let s3 = s3.clone();
        let bucket = names.bucket.clone();
        async move {
            s3.get_object()
                .bucket(bucket)
                .key(key)
                .presigned(conf()?)
                .await
                .map(|p| p.uri().to_string())
                .map_err(|e| sdk("s3:GetObject", e))
        }
    };
    let binary_url = match (binary_key, given) {
        (Some(key), _) => presign_get(key).await?,
        (None, Some((url, _))) => url,
        (None, None) => unreachable!("a binary is uploaded or given by URL"),
    };
    let job_url = presign_get(job_key).await?;
    let state_url = s3
        .put_object()
        .bucket(&names.bucket)
        .key(bootstrap::STATE_KEY)
        .content_type("application/json")
        .presigned(conf()?)
        .await
        .map_err(|e| sdk("s3:PutObject", e))?
        .uri()
        .to_string();
    let script = userdata::render(&UserData {
        migration: &spec.name,
        version: env!("CARGO_PKG_VERSION"),
        pg_major: w.pg_client_major,
        binary_url: &binary_url,
        binary_sha256: &sha,
        job_url: &job_url,
        rds_ca_url: userdata::RDS_CA_URL,
        state_url: Some(&state_url),
    });
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(script);
    let mut req = aws
        .ec2()
        .run_instances()
        .image_id(&ami.id)
        .instance_type(InstanceType::from(w.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .user_data(encoded)
        // In the migration's first subnet with a public address: the worker reaches Heroku,
        // S3 and apt over the internet (in a subnet without an internet gateway route it needs
        // a NAT, and the address stays unused).
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(subnet)
                .groups(worker_sg)
                .associate_public_ip_address(true)
                .delete_on_termination(true)
                .build(),
        )
        .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(1)
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/sda1")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(30)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(tag_spec(ResourceType::Instance, &spec.name, &names.worker))
        .tag_specifications(tag_spec(ResourceType::Volume, &spec.name, &names.worker));
    if spec.ssh_public_key.is_some() {
        req = req.key_name(&names.key_pair);
    }
    let mut settle = Settle::new();
    let out = loop {
        match req.clone().send().await {
            Ok(out) => break out,
            Err(e)
                if matches!(
                    code(&e),
                    Some("InvalidGroup.NotFound" | "InvalidSubnetID.NotFound")
                ) && settle.again().await => {}
            Err(e) => return Err(sdk("ec2:RunInstances", e)),
        }
    };
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .unwrap_or_default()
        .to_string();
    Ok(id)
}

/// Where the worker's job lives in the private bucket.
const JOB_KEY: &str = "jobs/job.json";

async fn put_private(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: ByteStream,
) -> Result<()> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .send()
        .await
        .map_err(|e| sdk("s3:PutObject", e))?;
    Ok(())
}

/// The running worker's job, read back from the bucket (`None` when it is not there).
async fn read_job(aws: &Aws, names: &Names) -> Result<Option<Job>> {
    let got = aws
        .s3()
        .get_object()
        .bucket(&names.bucket)
        .key(JOB_KEY)
        .send()
        .await;
    let object = match got {
        Ok(o) => o,
        Err(e) if code(&e) == Some("NoSuchKey") => return Ok(None),
        Err(e) => return Err(sdk("s3:GetObject", e)),
    };
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| Error::other("reading the worker's job from the bucket").with_source(e))?
        .into_bytes();
    Job::from_bytes(&bytes).map(Some)
}

/// On a re-run with a worker in place: compares the source URL resolved now (the app's current
/// `DATABASE_URL`) with the one in the worker's job, without printing either. When they differ,
/// hands the new one to the worker through the target (sealed with the job's key, see
/// `aws::job`), then rewrites the job in the bucket. The instance stays; the worker takes the
/// new URL at its next start or failed run and resumes from the target's records.
#[allow(clippy::too_many_arguments)]
pub(super) async fn refresh_worker_source(
    aws: &Aws,
    spec: &Spec,
    names: &Names,
    instance: &str,
    input: &WorkerInput,
    endpoint: Option<(String, i32)>,
    password: &str,
    out: &mut Provisioned,
) -> Result<()> {
    let Some(mut job) = read_job(aws, names).await? else {
        tracing::warn!(
            "the job of worker {instance} is missing from s3://{}/{JOB_KEY}; its source URL cannot be compared",
            names.bucket
        );
        return Ok(());
    };
    if job.source_url == input.source_url {
        return Ok(());
    }
    let (Some(key_id), Some(sealed)) = (job.source_key_id(), job.seal_source(&input.source_url)?)
    else {
        return Err(Error::usage(format!(
            "the source URL changed, and worker {instance} was started by a heroku2rds that cannot receive a new one"
        ))
        .with_fix("`heroku2rds teardown` (the database and the copy stay) then run this again: the new worker resumes from the target's records"));
    };
    let (host, port) = endpoint
        .ok_or_else(|| Error::other(format!("RDS reports no endpoint for {}", names.db)))?;
    let reach = crate::aws::setup::reach(&input.reach).await?;
    let target = reach.target(
        &host,
        port,
        &spec.db.master_username,
        password,
        &spec.db.db_name,
    )?;
    let source = ConnSpec::parse(&input.source_url, "source")?;
    let mut c = target.connect().await?;
    let generation = crate::pg::store::put_worker_source(
        &mut c,
        &key_id,
        &sealed,
        &crate::pg::replicate::source_identity(&source),
    )
    .await?;
    job.source_url = input.source_url.clone();
    put_private(
        &aws.s3(),
        &names.bucket,
        JOB_KEY,
        ByteStream::from(job.to_bytes()),
    )
    .await?;
    tracing::info!(
        "the source URL changed: handed to worker {instance} through the target (generation {generation}); it resumes with it without being replaced"
    );
    out.record("EC2 worker source URL", instance, "changed");
    Ok(())
}
