//! What a migration's AWS side should look like: names, sizes, validated inputs. Pure functions.

use std::net::IpAddr;

use serde::Serialize;

use crate::error::{Error, Result};

/// AWS regions heroku2rds accepts (commercial, GovCloud, China).
pub const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "ca-west-1",
    "mx-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-1",
    "ap-south-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
];

/// The desired AWS side of one migration.
#[derive(Clone, Debug, Serialize)]
pub struct Spec {
    /// The migration's name (the tag value, and part of every resource name).
    pub name: String,
    /// Where the RDS primary, the worker and the bucket go.
    pub region: String,
    /// Where the cross-region read replica goes, if any.
    pub replica_region: Option<String>,
    /// The operator's address range, admitted to 5432 (and 22 with SSH).
    pub operator_cidr: String,
    /// Further ranges admitted to 5432 (e.g. the app's static egress addresses).
    pub app_cidrs: Vec<String>,
    /// Admit 5432 from anywhere (TLS and the password still required). Off unless asked.
    pub open_to_internet: bool,
    /// An OpenSSH public key to install on the worker; SSH is closed without one.
    pub ssh_public_key: Option<String>,
    /// Where the primary, the worker and their groups go.
    pub network: Network,
    /// Where the replica and its group go (in the replica's region).
    pub replica_network: Network,
    /// The database.
    pub db: DbSpec,
    /// The worker; `None` when only the database side is wanted.
    pub worker: Option<WorkerSpec>,
}

/// The VPC and subnets of one region as given; both empty means the region's default VPC.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Network {
    /// Checked against the subnets' VPC when given.
    pub vpc_id: Option<String>,
    /// The DB subnet group's subnets (at least two availability zones); the worker goes in the
    /// first.
    pub subnet_ids: Vec<String>,
}

/// The RDS primary.
#[derive(Clone, Debug, Serialize)]
pub struct DbSpec {
    /// e.g. `db.m7g.large`.
    pub instance_class: String,
    /// gp3 storage, GiB.
    pub storage_gb: i32,
    /// Storage autoscaling ceiling; `None` keeps autoscaling off.
    pub max_storage_gb: Option<i32>,
    /// PostgreSQL major version of the target (>= the source's).
    pub engine_major: u32,
    /// The database created on the instance.
    pub db_name: String,
    /// The master user.
    pub master_username: String,
    /// Automated backup retention, days.
    pub backup_retention_days: i32,
    /// A standby in a second availability zone.
    pub multi_az: bool,
    /// RDS Extended Support (billed) once the major's standard support ends; off unless asked.
    pub extended_support: bool,
    /// Set in the parameter group when the source's schema needs more than the default 64 (its
    /// restore holds a lock per relation in one transaction).
    pub max_locks_per_transaction: Option<i64>,
}

/// The EC2 worker.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerSpec {
    /// e.g. `m7i.large`.
    pub instance_type: String,
    /// `amd64` or `arm64` (the AMI and the heroku2rds binary must match).
    pub arch: String,
    /// The PostgreSQL client major version to install (the source's).
    pub pg_client_major: u32,
}

/// Resource names derived from the migration's name.
#[derive(Clone, Debug, Serialize)]
pub struct Names {
    pub worker_sg: String,
    pub db_sg: String,
    pub replica_sg: String,
    pub param_group: String,
    pub subnet_group: String,
    pub db: String,
    pub replica: String,
    pub bucket: String,
    pub secret: String,
    pub worker: String,
    pub key_pair: String,
}

impl Names {
    /// Names for migration `name` in `account` and `region`.
    pub fn new(name: &str, account: &str, region: &str, engine_major: u32) -> Names {
        let base = format!("heroku2rds-{name}");
        Names {
            worker_sg: format!("{base}-worker"),
            db_sg: format!("{base}-db"),
            replica_sg: format!("{base}-replica-db"),
            param_group: format!("{base}-pg{engine_major}"),
            subnet_group: base.clone(),
            db: base.clone(),
            replica: format!("{base}-replica"),
            bucket: bucket_name(name, account, region),
            secret: format!("heroku2rds/{name}/rds-master"),
            worker: format!("{base}-worker"),
            key_pair: format!("{base}-ssh"),
        }
    }
}

/// S3 bucket names are global: the account and region make ours unique. At most 63 characters.
pub fn bucket_name(name: &str, account: &str, region: &str) -> String {
    let full = format!("heroku2rds-{name}-{account}-{region}");
    if full.len() <= 63 {
        return full;
    }
    // Keep the account and region (the parts that make it unique); shorten the name.
    let keep = 63usize.saturating_sub(format!("heroku2rds--{account}-{region}").len());
    let short: String = name.chars().take(keep).collect();
    format!(
        "heroku2rds-{}-{account}-{region}",
        short.trim_end_matches('-')
    )
}

/// A migration name: lowercase letters, digits and single hyphens, starting with a letter, at
/// most 40 characters (it becomes part of RDS identifiers and bucket names).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(
            Error::usage(format!("invalid migration name {name:?}")).with_fix(
                "use 1-40 lowercase letters, digits and single hyphens, starting with a letter \
             (it becomes part of AWS resource names), e.g. --name acme-prod",
            ),
        )
    }
}

/// A known AWS region.
pub fn validate_region(region: &str, flag: &str) -> Result<()> {
    if region.starts_with("us-gov-") || region.starts_with("cn-") {
        // Other partitions: another Canonical owner id for the AMIs, `arn:aws-us-gov:` /
        // `arn:aws-cn:` in the policies, their own RDS CA bundles and presigned replica URLs.
        return Err(Error::usage(format!(
            "{flag} {region:?} is in the AWS {} partition, which heroku2rds does not support yet",
            if region.starts_with("cn-") { "China" } else { "GovCloud (US)" }
        ))
        .with_fix("use a region of the commercial partition (e.g. us-east-2), or migrate with `heroku2rds replicate` and `cutover` against an RDS instance you created yourself"));
    }
    if REGIONS.contains(&region) {
        Ok(())
    } else {
        Err(
            Error::usage(format!("unknown AWS region {region:?} for {flag}")).with_fix(format!(
                "use a region name such as us-east-2 (one of: {})",
                REGIONS.join(", ")
            )),
        )
    }
}

/// The operator's range: an address (taken as /32 or /128) or a CIDR no wider than /24 (IPv4)
/// or /64 (IPv6). Anything wider, and 0.0.0.0/0 in particular, is refused: use
/// `--open-to-internet` to say so explicitly.
pub fn normalize_cidr(value: &str, flag: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::usage(format!("{flag} {value:?}: {why}")).with_fix(format!(
            "give your public address, e.g. {flag} 203.0.113.7/32 (`curl https://checkip.amazonaws.com` shows it)"
        ))
    };
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let ip: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        Some(p) => p.parse().map_err(|_| bad("not a prefix length"))?,
        None => max,
    };
    if prefix > max {
        return Err(bad("prefix length too long"));
    }
    let narrowest_allowed = if ip.is_ipv4() { 24 } else { 64 };
    if prefix < narrowest_allowed {
        return Err(bad(&format!(
            "range too wide (/{prefix}); heroku2rds admits single addresses or small ranges only \
             (--open-to-internet exists for the rare case that needs it)"
        )));
    }
    // Host bits zeroed, as AWS stores the rule: compared with what AWS answers, a CIDR with host
    // bits set would look different on every run (added again, the stored rule revoked).
    let network = match ip {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Ok(format!("{network}/{prefix}"))
}

/// The database name and the master user: RDS for PostgreSQL takes 1-63 letters, digits and
/// underscores starting with a letter; names PostgreSQL or RDS reserve are refused here rather
/// than by CreateDBInstance after the groups, parameter group and secret exist.
pub fn validate_db_identifier(value: &str, setting: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::usage(format!("{setting} {value:?} {why}")).with_fix(format!(
            "set {setting} in heroku2rds.toml to 1-63 letters, digits and underscores starting              with a letter, e.g. {setting} = \"app\""
        )))
    };
    let lower = value.to_ascii_lowercase();
    if value.is_empty() || value.len() > 63 {
        return bad("must be 1-63 characters long");
    }
    if !value.starts_with(|c: char| c.is_ascii_alphabetic())
        || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return bad("may hold only letters, digits and underscores, starting with a letter");
    }
    if lower.starts_with("pg_") || lower.starts_with("rds") {
        return bad("is reserved (names starting with pg_ or rds belong to PostgreSQL and RDS)");
    }
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "as",
        "asc",
        "both",
        "case",
        "check",
        "column",
        "constraint",
        "create",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "false",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "in",
        "into",
        "not",
        "null",
        "only",
        "or",
        "order",
        "primary",
        "public",
        "select",
        "table",
        "then",
        "to",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "with",
        "template0",
        "template1",
    ];
    if RESERVED.contains(&lower.as_str()) {
        return bad("is a reserved word");
    }
    Ok(())
}

/// Automated backups: 0-35 days; a read replica needs them on (RDS refuses a replica of a
/// primary without automated backups).
pub fn validate_retention(days: i32, with_replica: bool) -> Result<()> {
    if !(0..=35).contains(&days) {
        return Err(
            Error::usage(format!("backup_retention_days {days} is outside 0-35")).with_fix(
                "set backup_retention_days in heroku2rds.toml to 1-35 days (7 by default)",
            ),
        );
    }
    if days == 0 && with_replica {
        return Err(Error::usage(
            "backup_retention_days 0 turns automated backups off, and a read replica needs them",
        )
        .with_fix("set backup_retention_days to at least 1, or leave --replica-region out"));
    }
    Ok(())
}

/// The storage-autoscaling ceiling: RDS wants it at least 10% above the allocated storage (and
/// at most 65,536 GiB).
pub fn validate_autoscaling(max_gb: i32, storage_gb: i32) -> Result<()> {
    let least = (storage_gb as i64 * 11 + 9) / 10;
    if (max_gb as i64) < least || max_gb > 65_536 {
        return Err(Error::usage(format!(
            "--storage-autoscaling-max-gb {max_gb}: RDS needs a ceiling of at least 110% of the \
             allocated {storage_gb} GiB, and at most 65536"
        ))
        .with_fix(format!(
            "pass --storage-autoscaling-max-gb {} or more",
            least.max(storage_gb as i64 * 2)
        )));
    }
    Ok(())
}

/// `--vpc-id` and `--subnet-ids` as given: AWS identifiers, subnets only with a VPC's subnets.
pub fn validate_network(n: &Network, vpc_flag: &str, subnets_flag: &str) -> Result<()> {
    let id_ok = |v: &str, prefix: &str| {
        v.strip_prefix(prefix).is_some_and(|hex| {
            (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit())
        })
    };
    if let Some(v) = &n.vpc_id {
        if !id_ok(v, "vpc-") {
            return Err(
                Error::usage(format!("{vpc_flag} {v:?} is not a VPC id")).with_fix(format!(
                    "give an id such as {vpc_flag} vpc-0a1b2c3d4e5f67890"
                )),
            );
        }
        if n.subnet_ids.is_empty() {
            return Err(Error::usage(format!(
                "{vpc_flag} needs {subnets_flag}: which of its subnets the database and the \
                 worker use"
            ))
            .with_fix(format!(
                "pass {subnets_flag} with subnets of {v} in at least two availability zones \
                 (the worker goes in the first; it needs an internet gateway route or a NAT)"
            )));
        }
    }
    for s in &n.subnet_ids {
        if !id_ok(s, "subnet-") {
            return Err(Error::usage(format!("{subnets_flag}: {s:?} is not a subnet id"))
                .with_fix(format!(
                    "give ids separated by commas, e.g. {subnets_flag} subnet-0a1b2c3d,subnet-4e5f6a7b"
                )));
        }
    }
    Ok(())
}

/// The end of RDS standard support for a PostgreSQL major (the last day), where known. After
/// it, RDS bills Extended Support for the major, or refuses it when Extended Support is off.
pub fn standard_support_end(major: u32) -> Option<&'static str> {
    Some(match major {
        11 => "2024-02-29",
        12 => "2025-02-28",
        13 => "2026-02-28",
        14 => "2027-02-28",
        15 => "2028-02-29",
        16 => "2029-02-28",
        17 => "2030-02-28",
        18 => "2031-02-28",
        _ => return None,
    })
}

/// The target's major when none is given: the source's while RDS still gives it standard
/// support on `today` (ISO date), else the oldest major that has it (an upgrade on the way,
/// which the logical copy allows; an older major would be billed Extended Support).
pub fn default_engine_major(source_major: u32, today: &str) -> u32 {
    (source_major.max(11)..=source_major.max(11) + 10)
        .find(|m| standard_support_end(*m).is_none_or(|end| end >= today))
        .unwrap_or(source_major)
}

/// `max_locks_per_transaction` for a source whose schema restore takes `locks` locks, on an
/// RDS instance assumed to allow only 100 connections (RDS sizes `max_connections` by memory:
/// about 80 on the smallest classes, hundreds on the default ones), so it fits on any class.
pub fn locks_per_transaction_for(locks: i64) -> i64 {
    crate::pg::preflight::locks_per_transaction_for(locks, 100)
}

/// gp3 storage for a source of `source_gb`: about twice its size, at least 20 GiB.
pub fn storage_for(source_gb: f64) -> i32 {
    let want = (source_gb * 2.0).ceil() as i64;
    want.clamp(20, 65_536) as i32
}

/// The RDS instance class for a source of `source_gb`.
pub fn db_class_for(source_gb: f64) -> &'static str {
    match source_gb {
        s if s < 50.0 => "db.m7g.large",
        s if s < 500.0 => "db.m7g.xlarge",
        s if s < 2000.0 => "db.m7g.2xlarge",
        _ => "db.m7g.4xlarge",
    }
}

/// The worker's instance type for a source of `source_gb` (it copies with one connection per
/// vCPU or two; the network, not the disk, is what it uses).
pub fn worker_type_for(source_gb: f64, arch: &str) -> &'static str {
    // Graviton for arm64: an x86 type with an arm64 image is refused by RunInstances.
    match (source_gb, arch == "arm64") {
        (s, false) if s < 100.0 => "m7i.large",
        (s, false) if s < 1000.0 => "m7i.xlarge",
        (_, false) => "m7i.2xlarge",
        (s, true) if s < 100.0 => "m7g.large",
        (s, true) if s < 1000.0 => "m7g.xlarge",
        (_, true) => "m7g.2xlarge",
    }
}

/// A master password from the operating system's CSPRNG: 32 characters from letters and digits
/// (RDS refuses `/`, `@`, `"` and spaces; 190 bits of entropy).
pub fn generate_password() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf)
            .map_err(|e| Error::other(format!("the system random generator failed: {e}")))?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - (256 % ALPHABET.len());
        for b in buf {
            if (b as usize) < limit && out.len() < 32 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bucket_limits() {
        let n = Names::new("acme-prod", "123456789012", "us-east-2", 16);
        assert_eq!(n.db, "heroku2rds-acme-prod");
        assert_eq!(n.param_group, "heroku2rds-acme-prod-pg16");
        assert_eq!(n.bucket, "heroku2rds-acme-prod-123456789012-us-east-2");
        let long = "a".repeat(40);
        let b = bucket_name(&long, "123456789012", "ap-southeast-4");
        assert!(b.len() <= 63, "{b}");
        assert!(b.ends_with("-123456789012-ap-southeast-4"));
    }

    #[test]
    fn name_validation() {
        for ok in ["a", "acme", "acme-prod-2"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "1acme",
            "acme-",
            "ac--me",
            "ac_me",
            &"a".repeat(41),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            normalize_cidr("203.0.113.7", "--operator-cidr").unwrap(),
            "203.0.113.7/32"
        );
        assert_eq!(
            normalize_cidr("203.0.113.0/28", "--x").unwrap(),
            "203.0.113.0/28"
        );
        assert_eq!(
            normalize_cidr("2001:db8::1", "--x").unwrap(),
            "2001:db8::1/128"
        );
        // Host bits are zeroed, as AWS stores the rule.
        assert_eq!(
            normalize_cidr("203.0.113.7/28", "--x").unwrap(),
            "203.0.113.0/28"
        );
        assert_eq!(
            normalize_cidr("198.51.100.255/24", "--x").unwrap(),
            "198.51.100.0/24"
        );
        assert_eq!(
            normalize_cidr("2001:db8::1:2/64", "--x").unwrap(),
            "2001:db8::/64"
        );
        for bad in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "::/0",
            "nope",
            "1.2.3.4/33",
            "1.2.3.4/x",
        ] {
            let e = normalize_cidr(bad, "--operator-cidr").unwrap_err();
            assert!(e.to_string().contains("--operator-cidr"), "{bad}: {e}");
        }
    }

    #[test]
    fn regions() {
        assert!(validate_region("us-east-2", "--region").is_ok());
        let e = validate_region("us-east-9", "--region").unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Usage);
        for other in ["us-gov-west-1", "cn-north-1"] {
            let e = validate_region(other, "--region").unwrap_err();
            assert!(e.to_string().contains("partition"), "{other}: {e}");
        }
    }

    #[test]
    fn sizing() {
        assert_eq!(storage_for(0.1), 20);
        assert_eq!(storage_for(30.2), 61);
        assert_eq!(storage_for(1e9), 65_536);
        assert_eq!(db_class_for(10.0), "db.m7g.large");
        assert_eq!(db_class_for(600.0), "db.m7g.2xlarge");
        assert_eq!(worker_type_for(5000.0, "amd64"), "m7i.2xlarge");
        assert_eq!(worker_type_for(50.0, "arm64"), "m7g.large");
        assert_eq!(worker_type_for(5000.0, "arm64"), "m7g.2xlarge");
    }

    #[test]
    fn database_settings() {
        for ok in ["app", "App_1", &"a".repeat(63)] {
            assert!(validate_db_identifier(ok, "db_name").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1app",
            "my-app",
            "pg_app",
            "rdsadmin",
            "select",
            &"a".repeat(64),
        ] {
            let e = validate_db_identifier(bad, "master_username").unwrap_err();
            assert!(e.to_string().contains("master_username"), "{bad}: {e}");
        }
        assert!(validate_retention(0, false).is_ok());
        assert!(validate_retention(0, true).is_err());
        assert!(validate_retention(36, false).is_err());
        assert!(validate_autoscaling(22, 20).is_ok());
        let e = validate_autoscaling(21, 20).unwrap_err();
        assert!(e.to_string().contains("110%"), "{e}");
        assert!(validate_autoscaling(70_000, 20).is_err());
        let net = |vpc: Option<&str>, subnets: &[&str]| Network {
            vpc_id: vpc.map(str::to_string),
            subnet_ids: subnets.iter().map(|s| s.to_string()).collect(),
        };
        assert!(validate_network(&net(None, &[]), "--vpc-id", "--subnet-ids").is_ok());
        assert!(validate_network(
            &net(Some("vpc-0a1b2c3d"), &["subnet-0a1b2c3d"]),
            "--vpc-id",
            "--subnet-ids"
        )
        .is_ok());
        for (vpc, subnets) in [
            (Some("vpc-0a1b2c3d"), vec![]),
            (Some("vpc-x"), vec!["subnet-0a1b2c3d"]),
            (None, vec!["sn-1"]),
        ] {
            assert!(validate_network(&net(vpc, &subnets), "--vpc-id", "--subnet-ids").is_err());
        }
    }

    #[test]
    fn support_windows() {
        assert_eq!(default_engine_major(16, "2026-12-03"), 16);
        assert_eq!(default_engine_major(13, "2026-12-03"), 14);
        assert_eq!(default_engine_major(12, "2026-01-01"), 13);
        assert_eq!(default_engine_major(10, "2026-12-03"), 14);
        assert_eq!(default_engine_major(30, "2026-12-03"), 30);
    }

    #[test]
    fn passwords_are_random_and_acceptable_to_rds() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
