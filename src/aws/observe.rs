//! Read-only calls that find what already exists for a migration. Nothing here changes AWS.

use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use super::errors::{code, sdk};
use super::spec::{Names, Network};
use super::{Aws, TAG_KEY};
use crate::error::Result;

/// Canonical's AWS account, the owner of the official Ubuntu images.
pub const CANONICAL: &str = "099720109477";

/// What a lookup by name found.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum Found<T> {
    /// Nothing with that name.
    Missing,
    /// Ours: it carries our tag.
    Ours(T),
    /// Something with our name that is not ours (untagged, or owned by someone else).
    Foreign { reason: String },
}

impl<T> Found<T> {
    /// The resource, when it is ours.
    pub fn ours(&self) -> Option<&T> {
        match self {
            Found::Ours(t) => Some(t),
            _ => None,
        }
    }
}

/// Where a security group rule admits traffic from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// An IPv4 or IPv6 range.
    Cidr(String),
    /// Another security group.
    Group(String),
}

/// One inbound TCP rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Rule {
    pub port: i32,
    pub peer: Peer,
}

/// A security group of ours.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub id: String,
    pub vpc_id: Option<String>,
    pub ingress: Vec<Rule>,
}

/// A subnet the migration uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub zone: String,
}

/// Where a region's resources go: the VPC and subnets resolved from the settings (given, or the
/// region's default VPC), or why there are none.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Placement {
    pub vpc_id: Option<String>,
    pub subnets: Vec<Subnet>,
    /// True when nothing was given and the region's default VPC is used.
    pub default_vpc: bool,
    /// Why provision cannot place resources here, with what to pass instead.
    pub problem: Option<String>,
}

/// Whether RDS offers an instance class for the engine's major in a region (and, when it does
/// not, a class of the same size it does offer).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Offer {
    pub class: String,
    pub offered: bool,
    pub alternative: Option<String>,
}

/// The worker's instance type as EC2 describes it: the architectures it runs (`x86_64`,
/// `arm64`); `None` when EC2 has no such type in the region.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerType {
    pub name: String,
    pub architectures: Option<Vec<String>>,
}

/// A DB subnet group of ours.
#[derive(Clone, Debug, Serialize)]
pub struct SubnetGroup {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
}

/// An RDS instance of ours.
#[derive(Clone, Debug, Serialize)]
pub struct Db {
    pub id: String,
    pub arn: String,
    pub status: String,
    pub class: String,
    pub storage_gb: i32,
    pub engine_version: String,
    pub endpoint: Option<(String, i32)>,
    pub encrypted: bool,
    pub deletion_protection: bool,
}

/// The archive bucket.
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    /// False when an interrupted provision created it but did not get to tag it (S3 cannot tag
    /// at creation); provision tags it, since the name holds our account id and region.
    pub tagged: bool,
}

/// An EC2 worker instance of ours.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    pub id: String,
    pub state: String,
    pub instance_type: String,
    pub public_ip: Option<String>,
    /// Launch time, Unix seconds.
    pub launched_at: Option<i64>,
}

/// The Ubuntu image the worker boots.
#[derive(Clone, Debug, Serialize)]
pub struct Ami {
    pub id: String,
    pub name: String,
}

/// Everything that exists for a migration, as found by name and tag.
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    pub account: String,
    /// Today (UTC, YYYY-MM-DD): the day support windows are compared with.
    pub today: String,
    /// When it was observed: what a worker's silence is measured against.
    #[serde(skip)]
    pub at: std::time::SystemTime,
    pub placement: Placement,
    pub replica_placement: Placement,
    pub subnet_group: Found<SubnetGroup>,
    pub replica_subnet_group: Found<SubnetGroup>,
    /// The class of a database still to be created (checked only then).
    pub db_offer: Option<Offer>,
    pub replica_offer: Option<Offer>,
    pub worker_type: Option<WorkerType>,
    pub worker_sg: Found<Group>,
    pub db_sg: Found<Group>,
    pub replica_sg: Found<Group>,
    pub key_pair: Found<String>,
    pub param_group: Found<String>,
    pub replica_param_group: Found<String>,
    pub db: Found<Db>,
    pub replica: Found<Db>,
    pub bucket: Found<Bucket>,
    pub secret: Found<String>,
    pub workers: Vec<Instance>,
    /// What the worker's bootstrap reported last (read when a worker exists).
    pub worker_bootstrap: Option<super::bootstrap::State>,
}

impl Observed {
    /// What a re-run does with the existing worker (`None`: there is none).
    pub fn worker_verdict(&self, now: std::time::SystemTime) -> Option<super::bootstrap::Verdict> {
        let w = self.workers.first()?;
        let age = w.launched_at.and_then(|t| {
            let launched = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
            now.duration_since(launched).ok()
        });
        Some(super::bootstrap::verdict(
            self.worker_bootstrap.as_ref(),
            age,
        ))
    }
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn foreign_tag(kind: &str, name: &str, migration: &str) -> String {
    format!(
        "a {kind} named {name} exists without the tag {TAG_KEY}={migration}: heroku2rds never \
         adopts what it did not create"
    )
}

/// What provision would create, to check before creating anything: the database's class and
/// major, the worker's type and architecture.
pub struct Wanted<'a> {
    pub network: &'a Network,
    pub replica_network: &'a Network,
    pub db_class: &'a str,
    pub engine_major: u32,
    pub worker_type: Option<&'a str>,
}

/// Finds every resource of migration `migration` (read-only). `wanted` holds the settings to
/// check against the regions (teardown passes none).
pub async fn observe(
    aws: &Aws,
    migration: &str,
    names: &Names,
    account: &str,
    wanted: Option<&Wanted<'_>>,
) -> Result<Observed> {
    let networks = wanted.map(|w| (w.network, w.replica_network));
    let ec2 = aws.ec2();
    let (placement, replica_placement) = match networks {
        Some((network, replica_network)) => (
            placement(&ec2, aws.region(), network, "--vpc-id", "--subnet-ids").await?,
            match aws.ec2_replica() {
                Some(c) => {
                    placement(
                        &c,
                        aws.replica_region().unwrap_or_default(),
                        replica_network,
                        "--replica-vpc-id",
                        "--replica-subnet-ids",
                    )
                    .await?
                }
                None => Placement::default(),
            },
        ),
        None => (Placement::default(), Placement::default()),
    };
    let worker_sg = group(&ec2, &names.worker_sg, migration).await?;
    let db_sg = group(&ec2, &names.db_sg, migration).await?;
    let replica_sg = match aws.ec2_replica() {
        Some(c) => group(&c, &names.replica_sg, migration).await?,
        None => Found::Missing,
    };
    let key_pair = key_pair(&ec2, &names.key_pair, migration).await?;
    let rds = aws.rds();
    let param_group = param_group(&rds, &names.param_group, migration).await?;
    let subnet_group = find_subnet_group(&rds, &names.subnet_group, migration).await?;
    let replica_subnet_group = match aws.rds_replica() {
        Some(c) => find_subnet_group(&c, &names.subnet_group, migration).await?,
        None => Found::Missing,
    };
    let db = db_instance(&rds, &names.db, migration).await?;
    let (replica, replica_param_group) = match aws.rds_replica() {
        Some(c) => (
            db_instance(&c, &names.replica, migration).await?,
            observe_param_group(&c, &names.param_group, migration).await?,
        ),
        None => (Found::Missing, Found::Missing),
    };
    let (mut db_offer, mut replica_offer, mut worker_type) = (None, None, None);
    if let Some(w) = wanted {
        if matches!(db, Found::Missing) {
            db_offer = Some(offer(&rds, w.db_class, w.engine_major).await?);
        }
        if let (Some(c), Found::Missing) = (aws.rds_replica(), &replica) {
            replica_offer = Some(offer(&c, w.db_class, w.engine_major).await?);
        }
        if let Some(t) = w.worker_type {
            worker_type = Some(instance_type(&ec2, t).await?);
        }
    }
    let bucket = bucket(aws, &names.bucket, migration).await?;
    let secret = secret(aws, &names.secret, migration).await?;
    let workers = workers(&ec2, migration).await?;
    let d = time::OffsetDateTime::now_utc().date();
    let worker_bootstrap = match (&bucket, workers.is_empty()) {
        (Found::Ours(_), false) => super::bootstrap::read(aws, &names.bucket).await?,
        _ => None,
    };
    Ok(Observed {
        account: account.to_string(),
        today: format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        at: std::time::SystemTime::now(),
        placement,
        replica_placement,
        subnet_group,
        replica_subnet_group,
        db_offer,
        replica_offer,
        worker_type,
        worker_sg,
        db_sg,
        replica_sg,
        key_pair,
        param_group,
        replica_param_group,
        db,
        replica,
        bucket,
        secret,
        workers,
        worker_bootstrap,
    })
}

fn has_tag<'a>(
    mut tags: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
    migration: &str,
) -> bool {
    tags.any(|(k, v)| k == Some(TAG_KEY) && v == Some(migration))
}

async fn group(ec2: &aws_sdk_ec2::Client, name: &str, migration: &str) -> Result<Found<Group>> {
    let out = ec2
        .describe_security_groups()
        .filters(filter("group-name", name))
        .send()
        .await
        .map_err(|e| sdk("ec2:DescribeSecurityGroups", e))?;
    let Some(g) = out.security_groups().first() else {
        return Ok(Found::Missing);
    };
    if !has_tag(g.tags().iter().map(|t| (t.key(), t.value())), migration) {
        return Ok(Found::Foreign {
            reason: foreign_tag("security group", name, migration),
        });
    }
    let mut ingress = Vec::new();
    for p in g.ip_permissions() {
        let port = p.from_port().unwrap_or(-1);
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                ingress.push(Rule {
                    port,
                    peer: Peer::Cidr(c.to_string()),
                });
            }
        }
        for r in p.ipv6_ranges() {
            if let Some(c) = r.cidr_ipv6() {
                ingress.push(Rule {
                    port,
                    peer: Peer::Cidr(c.to_string()),
                });
            }
        }
        for pair in p.user_id_group_pairs() {
            if let Some(id) = pair.group_id() {
                ingress.push(Rule {
                    port,
                    peer: Peer::Group(id.to_string()),
                });
            }
        }
    }
    ingress.sort();
    Ok(Found::Ours(Group {
        id: g.group_id().unwrap_or_default().to_string(),
        vpc_id: g.vpc_id().map(str::to_string),
        ingress,
    }))
}

async fn key_pair(ec2: &aws_sdk_ec2::Client, name: &str, migration: &str) -> Result<Found<String>> {
    let out = ec2
        .describe_key_pairs()
        .filters(filter("key-name", name))
        .send()
        .await
        .map_err(|e| sdk("ec2:DescribeKeyPairs", e))?;
    Ok(match out.key_pairs().first() {
        None => Found::Missing,
        Some(k) if has_tag(k.tags().iter().map(|t| (t.key(), t.value())), migration) => {
            Found::Ours(k.key_pair_id().unwrap_or_default().to_string())
        }
        Some(_) => Found::Foreign {
            reason: foreign_tag("key pair", name, migration),
        },
    })
}

async fn workers(ec2: &aws_sdk_ec2::Client, migration: &str) -> Result<Vec<Instance>> {
    let out = ec2
        .describe_instances()
        .filters(filter(&format!("tag:{TAG_KEY}"), migration))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .send()
        .await
        .map_err(|e| sdk("ec2:DescribeInstances", e))?;
    let mut found = Vec::new();
    for r in out.reservations() {
        for i in r.instances() {
            found.push(Instance {
                id: i.instance_id().unwrap_or_default().to_string(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                instance_type: i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                public_ip: i.public_ip_address().map(str::to_string),
                launched_at: i.launch_time().map(|t| t.secs()),
            });
        }
    }
    Ok(found)
}

/// Resolves where `region`'s resources go: the given subnets (and VPC), or the default VPC's
/// default subnets. A problem (no default VPC, an unknown id, subnets of several VPCs or of one
/// zone) is returned as the placement's `problem`, for the plan to show as a conflict.
async fn placement(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    net: &Network,
    vpc_flag: &str,
    subnets_flag: &str,
) -> Result<Placement> {
    let mut p = Placement::default();
    let both = format!(
        "{vpc_flag} VPC {subnets_flag} SUBNET,SUBNET (subnets in at least two availability \
         zones; the worker goes in the first, which needs a route to an internet gateway or a NAT)"
    );
    if net.subnet_ids.is_empty() {
        let out = ec2
            .describe_vpcs()
            .filters(filter("is-default", "true"))
            .send()
            .await
            .map_err(|e| sdk("ec2:DescribeVpcs", e))?;
        let Some(vpc) = out.vpcs().first().and_then(|v| v.vpc_id()) else {
            p.problem = Some(format!(
                "no default VPC in {region} (accounts set up by Control Tower or a landing zone \
                 often have none): pass {both}"
            ));
            return Ok(p);
        };
        p.default_vpc = true;
        p.vpc_id = Some(vpc.to_string());
        let out = ec2
            .describe_subnets()
            .filters(filter("vpc-id", vpc))
            .filters(filter("default-for-az", "true"))
            .send()
            .await
            .map_err(|e| sdk("ec2:DescribeSubnets", e))?;
        p.subnets = subnets_of(&out);
        p.subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
    } else {
        let out = match ec2
            .describe_subnets()
            .set_subnet_ids(Some(net.subnet_ids.clone()))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if code(&e) == Some("InvalidSubnetID.NotFound") => {
                p.problem = Some(format!(
                    "{subnets_flag}: {} not found in {region} (a subnet of another region or \
                     account?): pass {both}",
                    net.subnet_ids.join(",")
                ));
                return Ok(p);
            }
            Err(e) => return Err(sdk("ec2:DescribeSubnets", e)),
        };
        let found = subnets_of(&out);
        // In the order given: the worker goes in the first.
        for id in &net.subnet_ids {
            match found.iter().find(|s| &s.id == id) {
                Some(s) if !p.subnets.contains(s) => p.subnets.push(s.clone()),
                Some(_) => {}
                None => {
                    p.problem = Some(format!("{subnets_flag}: {id} not found in {region}"));
                    return Ok(p);
                }
            }
        }
        let vpcs: std::collections::BTreeSet<&str> =
            p.subnets.iter().map(|s| s.vpc_id.as_str()).collect();
        if vpcs.len() > 1 {
            p.problem = Some(format!(
                "{subnets_flag}: the subnets belong to several VPCs ({}); give subnets of one VPC",
                vpcs.into_iter().collect::<Vec<_>>().join(", ")
            ));
            return Ok(p);
        }
        let vpc = p.subnets[0].vpc_id.clone();
        if let Some(given) = &net.vpc_id {
            if *given != vpc {
                p.problem = Some(format!(
                    "{subnets_flag}: the subnets are in {vpc}, not in {vpc_flag} {given}"
                ));
                return Ok(p);
            }
        }
        p.vpc_id = Some(vpc);
    }
    let zones: std::collections::BTreeSet<&str> =
        p.subnets.iter().map(|s| s.zone.as_str()).collect();
    if zones.len() < 2 {
        p.problem = Some(format!(
            "RDS needs subnets in at least two availability zones of {region}, and {} has {}: \
             pass {both}",
            p.vpc_id.as_deref().unwrap_or("the VPC"),
            match zones.len() {
                0 => "none".to_string(),
                _ => format!("only {}", zones.into_iter().collect::<Vec<_>>().join(", ")),
            }
        ));
    }
    Ok(p)
}

fn subnets_of(
    out: &aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput,
) -> Vec<Subnet> {
    out.subnets()
        .iter()
        .map(|s| Subnet {
            id: s.subnet_id().unwrap_or_default().to_string(),
            vpc_id: s.vpc_id().unwrap_or_default().to_string(),
            zone: s.availability_zone().unwrap_or_default().to_string(),
        })
        .collect()
}

async fn find_subnet_group(
    rds: &aws_sdk_rds::Client,
    name: &str,
    migration: &str,
) -> Result<Found<SubnetGroup>> {
    let out = match rds
        .describe_db_subnet_groups()
        .db_subnet_group_name(name)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if code(&e) == Some("DBSubnetGroupNotFoundFault") => return Ok(Found::Missing),
        Err(e) => return Err(sdk("rds:DescribeDBSubnetGroups", e)),
    };
    let Some(g) = out.db_subnet_groups().first() else {
        return Ok(Found::Missing);
    };
    let tags = rds
        .list_tags_for_resource()
        .resource_name(g.db_subnet_group_arn().unwrap_or_default())
        .send()
        .await
        .map_err(|e| sdk("rds:ListTagsForResource", e))?;
    if !has_tag(
        tags.tag_list().iter().map(|t| (t.key(), t.value())),
        migration,
    ) {
        return Ok(Found::Foreign {
            reason: foreign_tag("DB subnet group", name, migration),
        });
    }
    Ok(Found::Ours(SubnetGroup {
        vpc_id: g.vpc_id().unwrap_or_default().to_string(),
        subnet_ids: g
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_identifier().map(str::to_string))
            .collect(),
    }))
}

/// Whether RDS offers `class` for PostgreSQL `major` here; when not, the first class of the
/// same size from the usual families that it does offer.
async fn offer(rds: &aws_sdk_rds::Client, class: &str, major: u32) -> Result<Offer> {
    let offered = class_offered(rds, class, major).await?;
    let mut alternative = None;
    if !offered {
        let size = class.rsplit('.').next().unwrap_or("large");
        for family in ["m7g", "m6g", "m6i", "m5", "r7g", "r6g"] {
            let candidate = format!("db.{family}.{size}");
            if candidate != class && class_offered(rds, &candidate, major).await? {
                alternative = Some(candidate);
                break;
            }
        }
    }
    Ok(Offer {
        class: class.to_string(),
        offered,
        alternative,
    })
}

async fn class_offered(rds: &aws_sdk_rds::Client, class: &str, major: u32) -> Result<bool> {
    let prefix = format!("{major}.");
    let mut marker = None;
    loop {
        let out = rds
            .describe_orderable_db_instance_options()
            .engine("postgres")
            .db_instance_class(class)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| sdk("rds:DescribeOrderableDBInstanceOptions", e))?;
        if out.orderable_db_instance_options().iter().any(|o| {
            o.engine_version().is_some_and(|v| v.starts_with(&prefix))
                && o.db_instance_class() == Some(class)
        }) {
            return Ok(true);
        }
        match out.marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_string()),
            _ => return Ok(false),
        }
    }
}

async fn instance_type(ec2: &aws_sdk_ec2::Client, name: &str) -> Result<WorkerType> {
    let architectures = match ec2
        .describe_instance_types()
        .instance_types(aws_sdk_ec2::types::InstanceType::from(name))
        .send()
        .await
    {
        Ok(out) => out.instance_types().first().map(|t| {
            t.processor_info()
                .map(|p| {
                    p.supported_architectures()
                        .iter()
                        .map(|a| a.as_str().to_string())
                        .collect()
                })
                .unwrap_or_default()
        }),
        Err(e) if code(&e) == Some("InvalidInstanceType") => None,
        Err(e) => return Err(sdk("ec2:DescribeInstanceTypes", e)),
    };
    Ok(WorkerType {
        name: name.to_string(),
        architectures,
    })
}

/// The parameter group `name`, in the primary region.
pub async fn observe_param_group(
    rds: &aws_sdk_rds::Client,
    name: &str,
    migration: &str,
) -> Result<Found<String>> {
    param_group(rds, name, migration).await
}

async fn param_group(
    rds: &aws_sdk_rds::Client,
    name: &str,
    migration: &str,
) -> Result<Found<String>> {
    let out = match rds
        .describe_db_parameter_groups()
        .db_parameter_group_name(name)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if code(&e) == Some("DBParameterGroupNotFound") => return Ok(Found::Missing),
        Err(e) => return Err(sdk("rds:DescribeDBParameterGroups", e)),
    };
    let Some(arn) = out
        .db_parameter_groups()
        .first()
        .and_then(|g| g.db_parameter_group_arn())
    else {
        return Ok(Found::Missing);
    };
    let tags = rds
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(|e| sdk("rds:ListTagsForResource", e))?;
    Ok(
        if has_tag(
            tags.tag_list().iter().map(|t| (t.key(), t.value())),
            migration,
        ) {
            Found::Ours(arn.to_string())
        } else {
            Found::Foreign {
                reason: foreign_tag("DB parameter group", name, migration),
            }
        },
    )
}

/// One RDS instance by identifier.
pub async fn db_instance(
    rds: &aws_sdk_rds::Client,
    id: &str,
    migration: &str,
) -> Result<Found<Db>> {
    let out = match rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if code(&e) == Some("DBInstanceNotFound") => return Ok(Found::Missing),
        Err(e) => return Err(sdk("rds:DescribeDBInstances", e)),
    };
    let Some(d) = out.db_instances().first() else {
        return Ok(Found::Missing);
    };
    if !has_tag(d.tag_list().iter().map(|t| (t.key(), t.value())), migration) {
        return Ok(Found::Foreign {
            reason: foreign_tag("DB instance", id, migration),
        });
    }
    Ok(Found::Ours(Db {
        id: id.to_string(),
        arn: d.db_instance_arn().unwrap_or_default().to_string(),
        status: d.db_instance_status().unwrap_or_default().to_string(),
        class: d.db_instance_class().unwrap_or_default().to_string(),
        storage_gb: d.allocated_storage().unwrap_or_default(),
        engine_version: d.engine_version().unwrap_or_default().to_string(),
        endpoint: d.endpoint().and_then(|e| {
            e.address()
                .map(|a| (a.to_string(), e.port().unwrap_or(5432)))
        }),
        encrypted: d.storage_encrypted().unwrap_or(false),
        deletion_protection: d.deletion_protection().unwrap_or(false),
    }))
}

/// The bucket `name`: missing, ours (tagged, or untagged and empty), or foreign.
pub async fn bucket(aws: &Aws, name: &str, migration: &str) -> Result<Found<Bucket>> {
    let s3 = aws.s3();
    // GetBucketTagging tells all three cases apart: no such bucket, ours (tagged), not ours
    // (403: another account's bucket, or our credentials lack s3:GetBucketTagging).
    match s3.get_bucket_tagging().bucket(name).send().await {
        Ok(t) => Ok(
            if has_tag(
                t.tag_set().iter().map(|t| (Some(t.key()), Some(t.value()))),
                migration,
            ) {
                Found::Ours(Bucket { tagged: true })
            } else {
                Found::Foreign {
                    reason: foreign_tag("S3 bucket", name, migration),
                }
            },
        ),
        Err(e) if code(&e) == Some("NoSuchBucket") => Ok(Found::Missing),
        Err(e) if code(&e) == Some("NoSuchTagSet") => {
            // Untagged: ours only if empty (an interrupted provision); otherwise refuse.
            let listed = s3
                .list_objects_v2()
                .bucket(name)
                .max_keys(1)
                .send()
                .await
                .map_err(|e| sdk("s3:ListBucket", e))?;
            Ok(if listed.contents().is_empty() {
                Found::Ours(Bucket { tagged: false })
            } else {
                Found::Foreign {
                    reason: foreign_tag("non-empty S3 bucket", name, migration),
                }
            })
        }
        Err(e) => {
            let denied = code(&e) == Some("AccessDenied");
            let err = sdk("s3:GetBucketTagging", e);
            Err(if denied {
                err.context(format!(
                    "the bucket {name} belongs to another account, or these credentials may not read its tags"
                ))
            } else {
                err
            })
        }
    }
}

async fn secret(aws: &Aws, name: &str, migration: &str) -> Result<Found<String>> {
    match aws.secrets().describe_secret().secret_id(name).send().await {
        Ok(d) => Ok(if d.deleted_date().is_some() {
            Found::Foreign {
                    reason: format!(
                        "the secret {name} is scheduled for deletion; restore it \
                         (`aws secretsmanager restore-secret --secret-id {name}`) or wait until it is gone"
                    ),
                }
        } else if has_tag(d.tags().iter().map(|t| (t.key(), t.value())), migration) {
            Found::Ours(d.arn().unwrap_or_default().to_string())
        } else {
            Found::Foreign {
                reason: foreign_tag("secret", name, migration),
            }
        }),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(Found::Missing),
        Err(e) => Err(sdk("secretsmanager:DescribeSecret", e)),
    }
}

/// The newest official Ubuntu 24.04 LTS image for `arch` (`amd64` or `arm64`), by owner and
/// name: an image with the same name from another owner is never taken.
pub async fn ubuntu_ami(aws: &Aws, arch: &str) -> Result<Option<Ami>> {
    let out = aws
        .ec2()
        .describe_images()
        .owners(CANONICAL)
        .filters(filter(
            "name",
            &format!("ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-{arch}-server-*"),
        ))
        .filters(filter("state", "available"))
        .send()
        .await
        .map_err(|e| sdk("ec2:DescribeImages", e))?;
    Ok(out
        .images()
        .iter()
        .filter(|i| i.owner_id() == Some(CANONICAL))
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
        .map(|i| Ami {
            id: i.image_id().unwrap_or_default().to_string(),
            name: i.name().unwrap_or_default().to_string(),
        }))
}
