//! The EC2 worker: its binary and job uploaded to the private bucket, the instance started
//! with user-data that fetches both through presigned URLs and reports its bootstrap state
//! through a third (see [`crate::aws::bootstrap`]). The URLs are minted right before
//! RunInstances, once the credentials are known to outlive them.

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

/// Uploads the binary and the job, and starts the instance with user-data pointing at both by
/// presigned URLs valid for [`bootstrap::URL_LIFETIME`] (refused when the credentials expire
/// sooner). The previous worker's bootstrap state is removed first.
pub(super) async fn launch_worker(
    aws: &Aws,
    spec: &Spec,
    names: &Names,
    worker_sg: &str,
    subnet: &str,
    job: &Job,
    binary: &std::path::Path,
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
    let sha = sha256_file(binary)?;
    let binary_key = format!("jobs/heroku2rds-{}-{}", env!("CARGO_PKG_VERSION"), w.arch);
    let job_key = "jobs/job.json".to_string();
    let binary_body = ByteStream::from_path(binary).await.map_err(|e| {
        Error::usage(format!(
            "cannot read the worker binary {}",
            binary.display()
        ))
        .with_source(e)
    })?;
    for (key, body) in [
        (&binary_key, binary_body),
        (&job_key, ByteStream::from(job.to_bytes())),
    ] {
        s3.put_object()
            .bucket(&names.bucket)
            .key(key)
            .body(body)
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .send()
            .await
            .map_err(|e| sdk("s3:PutObject", e))?;
    }
    bootstrap::clear(aws, &names.bucket).await?;
    // Minted last, right before RunInstances: their clock starts now.
    let conf = || {
        PresigningConfig::expires_in(bootstrap::URL_LIFETIME)
            .map_err(|e| Error::other("presigning").with_source(e))
    };
    let mut urls = Vec::new();
    for key in [&binary_key, &job_key] {
        let url = s3
            .get_object()
            .bucket(&names.bucket)
            .key(key)
            .presigned(conf()?)
            .await
            .map_err(|e| sdk("s3:GetObject", e))?;
        urls.push(url.uri().to_string());
    }
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
        binary_url: &urls[0],
        binary_sha256: &sha,
        job_url: &urls[1],
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
