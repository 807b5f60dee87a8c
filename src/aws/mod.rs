//! The AWS side of a migration: a security group pair, the RDS PostgreSQL primary (and an
//! optional cross-region read replica), a Secrets Manager secret holding the master password, a
//! private S3 bucket for the final archive and the worker's job, and the EC2 worker.
//!
//! Every resource carries the tag `heroku2rds:migration=<name>`. Provision is find-or-create by
//! that tag (re-running converges and never duplicates); teardown finds everything by it. A
//! resource with one of our names but without our tag is never adopted or changed.
//!
//! The flow is: [`observe`] (read-only calls) -> [`plan::plan`] (a pure function of the desired
//! spec and what was observed) -> [`provision::apply`] or [`teardown::run`].

pub mod bootstrap;
pub mod elf;
pub mod errors;
pub mod job;
pub mod observe;
pub mod plan;
pub mod provision;
pub mod s3;
pub mod setup;
pub mod spec;
pub mod teardown;
pub mod userdata;

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::error::Result;

/// The tag every resource of a migration carries; its value is the migration's name.
pub const TAG_KEY: &str = "heroku2rds:migration";

/// One SDK configuration per region in play, loaded once per run with the standard credential
/// chain (environment, profiles, SSO, instance roles) and `AWS_ENDPOINT_URL` for emulators.
#[derive(Clone, Debug)]
pub struct Aws {
    primary: SdkConfig,
    replica: Option<SdkConfig>,
}

impl Aws {
    /// Loads the configuration for `region` (and `replica_region`, when given).
    pub async fn load(region: &str, replica_region: Option<&str>) -> Aws {
        let primary = load_region(region).await;
        let replica = match replica_region {
            Some(r) => Some(load_region(r).await),
            None => None,
        };
        Aws { primary, replica }
    }

    /// The primary region's name.
    pub fn region(&self) -> &str {
        region_name(&self.primary)
    }

    /// The replica region's name, when a replica is in play.
    pub fn replica_region(&self) -> Option<&str> {
        self.replica.as_ref().map(region_name)
    }

    /// True when an endpoint override (an emulator) is configured.
    pub fn emulated(&self) -> bool {
        self.primary.endpoint_url().is_some()
    }

    /// EC2 in the primary region.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.primary)
    }

    /// EC2 in the replica region.
    pub fn ec2_replica(&self) -> Option<aws_sdk_ec2::Client> {
        self.replica.as_ref().map(aws_sdk_ec2::Client::new)
    }

    /// RDS in the primary region.
    pub fn rds(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&self.primary)
    }

    /// RDS in the replica region.
    pub fn rds_replica(&self) -> Option<aws_sdk_rds::Client> {
        self.replica.as_ref().map(aws_sdk_rds::Client::new)
    }

    /// S3 in the primary region (path-style addressing when an emulator is configured: virtual
    /// hosts such as `bucket.127.0.0.1` do not resolve).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.primary)
            .force_path_style(self.emulated())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Secrets Manager in the primary region.
    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.primary)
    }

    /// STS in the primary region.
    pub fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.primary)
    }

    /// When the credentials expire (`None`: long-term keys, or no expiry given). Temporary
    /// credentials (SSO, assumed roles) bound every presigned URL made with them.
    pub async fn credentials_expiry(&self) -> Result<Option<std::time::SystemTime>> {
        use aws_sdk_s3::config::ProvideCredentials;
        let Some(provider) = self.primary.credentials_provider() else {
            return Ok(None);
        };
        let creds = provider.provide_credentials().await.map_err(|e| {
            crate::error::Error::usage("cannot load your AWS credentials")
                .with_fix("check your AWS profile or environment (aws sts get-caller-identity), then re-run")
                .with_source(e)
        })?;
        Ok(creds.expiry())
    }

    /// The account the credentials belong to (STS GetCallerIdentity, which needs no permission
    /// on AWS). Also the first call of every run, so bad or missing credentials fail here, early.
    pub async fn account(&self) -> Result<String> {
        let out = self
            .sts()
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| errors::sdk("sts:GetCallerIdentity", e))?;
        Ok(out.account().unwrap_or_default().to_string())
    }
}

async fn load_region(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .load()
        .await
}

fn region_name(c: &SdkConfig) -> &str {
    c.region().map(|r| r.as_ref()).unwrap_or("")
}
