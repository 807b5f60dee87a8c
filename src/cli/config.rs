//! heroku2rds.toml + flags -> validated settings. Flags win over the file; the file wins over
//! defaults. Nothing here changes anything outside this process.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The default config file, in the current directory.
pub const DEFAULT_PATH: &str = "heroku2rds.toml";

/// The file's contents. Every field is optional; unknown fields are an error (a typo must not
/// silently fall back to a default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The migration's name.
    pub name: Option<String>,
    /// The Heroku app.
    pub app: Option<String>,
    /// AWS settings.
    #[serde(default)]
    pub aws: AwsFile,
}

/// The `[aws]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsFile {
    pub region: Option<String>,
    pub replica_region: Option<String>,
    pub operator_cidr: Option<String>,
    #[serde(default)]
    pub app_cidrs: Vec<String>,
    pub open_to_internet: Option<bool>,
    pub db_instance_class: Option<String>,
    pub worker_instance_type: Option<String>,
    pub worker_arch: Option<String>,
    pub worker_binary: Option<PathBuf>,
    pub worker_binary_url: Option<String>,
    pub worker_binary_sha256: Option<String>,
    pub engine_major: Option<u32>,
    pub storage_autoscaling_max_gb: Option<i32>,
    pub ssh_public_key: Option<PathBuf>,
    pub db_name: Option<String>,
    pub master_username: Option<String>,
    pub backup_retention_days: Option<i32>,
    pub multi_az: Option<bool>,
    pub extended_support: Option<bool>,
    pub vpc_id: Option<String>,
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    pub replica_vpc_id: Option<String>,
    #[serde(default)]
    pub replica_subnet_ids: Vec<String>,
}

/// Reads `path`, or `heroku2rds.toml` in the current directory when it exists (no file is fine).
pub fn load(path: Option<&Path>) -> Result<File> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(File::default())
        }
        Err(e) => {
            return Err(Error::usage(format!("cannot read {}", path.display()))
                .with_fix("check the --config path (`heroku2rds init` writes one)")
                .with_source(e))
        }
    };
    toml::from_str(&text).map_err(|e| {
        // Where: line and column of the start of the offending span.
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" (line {line}, column {column})")
        });
        Error::usage(format!(
            "{} is not valid{at}: {}",
            path.display(),
            e.message()
        ))
        .with_fix("fix the file; `heroku2rds init` writes a commented example with every setting")
    })
}

/// What `init` writes: every setting with its default, commented. Values given to `init` are
/// filled in; the rest stay commented out so the defaults apply.
pub fn template(app: &str, name: &str, region: &str, replica_region: Option<&str>) -> String {
    let replica = match replica_region {
        Some(r) => format!("replica_region = \"{r}\""),
        None => "# replica_region = \"us-east-1\"".to_string(),
    };
    format!(
        r#"# heroku2rds.toml: settings of one migration. Flags override them; see README.md.
# Written by `heroku2rds init`. Secrets never go here: database URLs come from
# HEROKU2RDS_SOURCE_URL / HEROKU2RDS_TARGET_URL, the Heroku token from HEROKU_API_KEY, AWS
# credentials from the usual AWS chain.

# The migration's name: part of every AWS resource name and the value of the
# heroku2rds:migration tag (lowercase letters, digits, hyphens).
name = "{name}"
# The Heroku app whose DATABASE_URL is migrated.
app = "{app}"

[aws]
# Region of the RDS primary, the worker and the archive bucket.
region = "{region}"
# A cross-region read replica (e.g. next to Heroku's US databases in us-east-1).
{replica}
# Address range admitted to the database (and SSH): default your public address /32.
# operator_cidr = "203.0.113.7/32"
# Further ranges admitted to 5432, e.g. the app's static outbound addresses.
# app_cidrs = []
# Admit 5432 from anywhere (TLS and the password still required). Needed when the app's
# dynos have no fixed outbound addresses.
# open_to_internet = false
# RDS instance class; default sized from the source (db.m7g.large below 50 GB).
# db_instance_class = "db.m7g.large"
# PostgreSQL major version on RDS; default the source's (never below it), or the oldest major
# still in RDS standard support when the source's is past it.
# engine_major = 16
# Keep a major past its standard support, billed as RDS Extended Support; off by default.
# extended_support = false
# A standby in a second availability zone (recommended for production; twice the instance cost).
# multi_az = false
# Storage autoscaling ceiling in GiB (at least 110% of the allocated storage); off by default,
# except with a replica (its replication slot can hold WAL during the bulk load).
# storage_autoscaling_max_gb = 500
# The VPC and subnets; default the region's default VPC. Accounts without one (landing zones,
# Control Tower) name them: subnets in at least two availability zones; the worker goes in the
# first, which needs a route to an internet gateway (it gets a public IP) or a NAT.
# vpc_id = "vpc-0a1b2c3d4e5f67890"
# subnet_ids = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
# The same for the replica's region.
# replica_vpc_id = "vpc-0f1e2d3c4b5a69788"
# replica_subnet_ids = ["subnet-1a2b3c4d", "subnet-5e6f7a8b"]
# The database and master user created on RDS.
# db_name = "app"
# master_username = "app"
# Automated backup retention in days.
# backup_retention_days = 7
# Worker instance type (default sized from the source, m7i.large below 100 GB) and architecture.
# worker_instance_type = "m7i.large"
# worker_arch = "amd64"
# The Linux heroku2rds binary the worker runs (default: this one, when it is a Linux build for
# the worker's architecture); a binary needing a newer glibc than Ubuntu 24.04's 2.39 is refused.
# worker_binary = "target/x86_64-unknown-linux-musl/release/heroku2rds"
# Or (macOS, other architectures): an https URL the worker downloads it from, and its SHA-256.
# worker_binary_url = "https://example.com/heroku2rds-x86_64-linux"
# worker_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
# An OpenSSH public key to install on the worker (SSH stays closed without one).
# ssh_public_key = "~/.ssh/id_ed25519.pub"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_mentions_every_setting() {
        let t = template("acme-prod", "acme", "us-east-2", Some("us-east-1"));
        let f: File = toml::from_str(&t).unwrap();
        assert_eq!(f.app.as_deref(), Some("acme-prod"));
        assert_eq!(f.aws.replica_region.as_deref(), Some("us-east-1"));
        // Uncommenting every line must still parse: each key is one the file accepts.
        let all: String = t
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| r.contains(" = "))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let all = all.replace(
            "replica_region = \"us-east-1\"\nreplica_region",
            "replica_region",
        );
        let f: File = toml::from_str(&all).unwrap();
        assert_eq!(f.aws.operator_cidr.as_deref(), Some("203.0.113.7/32"));
        assert_eq!(f.aws.backup_retention_days, Some(7));
        assert!(f.aws.ssh_public_key.is_some() && f.aws.worker_arch.is_some());
    }

    #[test]
    fn unknown_keys_are_refused_and_known_ones_read() {
        let ok: File = toml::from_str(
            "name = \"acme\"\n[aws]\nregion = \"us-east-2\"\napp_cidrs = [\"203.0.113.0/28\"]\n",
        )
        .unwrap();
        assert_eq!(ok.name.as_deref(), Some("acme"));
        assert_eq!(ok.aws.app_cidrs, vec!["203.0.113.0/28".to_string()]);
        assert!(toml::from_str::<File>("[aws]\nregoin = \"us-east-2\"\n").is_err());
        let dir = std::env::temp_dir().join(format!("heroku2rds-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heroku2rds.toml");
        std::fs::write(&path, "name = \"acme\"\n[aws]\nregoin = \"us-east-2\"\n").unwrap();
        let e = load(Some(&path)).unwrap_err();
        assert!(
            e.message()
                .contains("(line 3, column 1): unknown field `regoin`"),
            "{}",
            e.message()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
