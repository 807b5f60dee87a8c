//! The plan: every resource of a migration as create / exists / change / conflict, computed by a
//! pure function of the desired [`Spec`] and what [`observe`](super::observe) found. `plan` and
//! `provision --dry-run` print it; `provision` carries it out.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::observe::{Found, Group, Observed, Offer, Peer, Placement, Rule, SubnetGroup};
use super::spec::{Names, Spec};

/// What provision will do about one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create,
    Exists,
    Change { changes: Vec<String> },
    Conflict { reason: String },
}

/// One resource of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// What it is (e.g. "RDS primary").
    pub resource: &'static str,
    /// Its name or identifier.
    pub name: String,
    /// Its region.
    pub region: String,
    /// What provision does about it.
    #[serde(flatten)]
    pub action: Action,
    /// Sizes and settings, for the reader.
    pub detail: String,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub name: String,
    pub account: String,
    pub items: Vec<Item>,
}

impl Plan {
    /// Reasons provision must refuse to run.
    pub fn conflicts(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|i| match &i.action {
                Action::Conflict { reason } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    /// True when provision has nothing to do.
    pub fn converged(&self) -> bool {
        self.items.iter().all(|i| i.action == Action::Exists)
    }
}

/// The inbound rules the database group must have, and nothing else. `worker_group` is the
/// worker group's id (or a placeholder name while it does not exist yet).
pub fn db_rules(spec: &Spec, worker_group: Option<&str>) -> BTreeSet<Rule> {
    let mut rules = cidr_rules(spec, 5432);
    if let (Some(g), Some(_)) = (worker_group, &spec.worker) {
        rules.insert(Rule {
            port: 5432,
            peer: Peer::Group(g.to_string()),
        });
    }
    rules
}

/// The replica's group admits what the primary's admits, minus the worker (another region).
pub fn replica_rules(spec: &Spec) -> BTreeSet<Rule> {
    cidr_rules(spec, 5432)
}

fn cidr_rules(spec: &Spec, port: i32) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    let mut add = |c: &str| {
        rules.insert(Rule {
            port,
            peer: Peer::Cidr(c.to_string()),
        });
    };
    add(&spec.operator_cidr);
    for c in &spec.app_cidrs {
        add(c);
    }
    if spec.open_to_internet {
        add("0.0.0.0/0");
        add("::/0");
    }
    rules
}

/// The worker group: no inbound rule at all, except SSH from the operator when a key is given.
pub fn worker_rules(spec: &Spec) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    if spec.ssh_public_key.is_some() {
        rules.insert(Rule {
            port: 22,
            peer: Peer::Cidr(spec.operator_cidr.clone()),
        });
    }
    rules
}

/// Rules to add and rules to remove so that `group` has exactly `want`.
pub fn rule_diff(group: &Group, want: &BTreeSet<Rule>) -> (Vec<Rule>, Vec<Rule>) {
    let have: BTreeSet<Rule> = group.ingress.iter().cloned().collect();
    (
        want.difference(&have).cloned().collect(),
        have.difference(want).cloned().collect(),
    )
}

fn describe_rule(r: &Rule) -> String {
    match &r.peer {
        Peer::Cidr(c) => format!("{} from {c}", r.port),
        Peer::Group(g) => format!("{} from group {g}", r.port),
    }
}

fn describe_rules(rules: &BTreeSet<Rule>) -> String {
    if rules.is_empty() {
        "inbound: nothing".to_string()
    } else {
        format!(
            "inbound: {}",
            rules
                .iter()
                .map(describe_rule)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn group_item(
    resource: &'static str,
    name: &str,
    region: &str,
    found: &Found<Group>,
    want: &BTreeSet<Rule>,
    placement: &Placement,
) -> Item {
    let action = match found {
        Found::Missing => Action::Create,
        Found::Foreign { reason } => Action::Conflict {
            reason: reason.clone(),
        },
        Found::Ours(g) if placement.vpc_id.is_some() && g.vpc_id != placement.vpc_id => {
            Action::Conflict {
                reason: moved_vpc(resource, name, g.vpc_id.as_deref(), placement),
            }
        }
        Found::Ours(g) => {
            let (add, remove) = rule_diff(g, want);
            let mut changes: Vec<String> = add
                .iter()
                .map(|r| format!("allow {}", describe_rule(r)))
                .collect();
            changes.extend(
                remove
                    .iter()
                    .map(|r| format!("revoke {}", describe_rule(r))),
            );
            if changes.is_empty() {
                Action::Exists
            } else {
                Action::Change { changes }
            }
        }
    };
    Item {
        resource,
        name: name.to_string(),
        region: region.to_string(),
        action,
        detail: describe_rules(want),
    }
}

fn moved_vpc(resource: &str, name: &str, has: Option<&str>, placement: &Placement) -> String {
    format!(
        "the {resource} {name} is in {}, and the settings place the migration in {}: a \
         resource cannot move between VPCs; keep the VPC it was provisioned in, or run \
         `heroku2rds teardown` first",
        has.unwrap_or("another VPC"),
        placement.vpc_id.as_deref().unwrap_or("another VPC")
    )
}

/// Where a region's resources go, as a plan line: a conflict when there is nowhere to put them.
fn placement_item(region: &str, p: &Placement) -> Item {
    let subnets = p
        .subnets
        .iter()
        .map(|s| format!("{} ({})", s.id, s.zone))
        .collect::<Vec<_>>()
        .join(", ");
    Item {
        resource: "VPC and subnets",
        name: p.vpc_id.clone().unwrap_or_else(|| "none".into()),
        region: region.to_string(),
        action: match &p.problem {
            Some(reason) => Action::Conflict {
                reason: reason.clone(),
            },
            None => Action::Exists,
        },
        detail: if p.subnets.is_empty() {
            "not created by heroku2rds".into()
        } else {
            format!(
                "{}; subnets {subnets}; not created by heroku2rds",
                if p.default_vpc {
                    "the region's default VPC"
                } else {
                    "as given"
                }
            )
        },
    }
}

fn subnet_group_item(
    resource: &'static str,
    name: &str,
    region: &str,
    found: &Found<SubnetGroup>,
    placement: &Placement,
) -> Item {
    let want: Vec<String> = placement.subnets.iter().map(|s| s.id.clone()).collect();
    let (action, note) = match found {
        Found::Ours(g)
            if placement.vpc_id.is_some() && Some(&g.vpc_id) != placement.vpc_id.as_ref() =>
        {
            (
                Action::Conflict {
                    reason: moved_vpc(resource, name, Some(&g.vpc_id), placement),
                },
                String::new(),
            )
        }
        Found::Ours(g) => {
            let (mut have, mut wanted) = (g.subnet_ids.clone(), want.clone());
            have.sort();
            wanted.sort();
            (
                Action::Exists,
                if have != wanted && !wanted.is_empty() {
                    format!(
                        "; now {} (differs from the settings; left as is)",
                        have.join(", ")
                    )
                } else {
                    String::new()
                },
            )
        }
        other => (simple(other), String::new()),
    };
    Item {
        resource,
        name: name.to_string(),
        region: region.to_string(),
        action,
        detail: format!("subnets {}{note}", want.join(", ")),
    }
}

fn simple<T>(found: &Found<T>) -> Action {
    match found {
        Found::Missing => Action::Create,
        Found::Ours(_) => Action::Exists,
        Found::Foreign { reason } => Action::Conflict {
            reason: reason.clone(),
        },
    }
}

/// The plan for `spec`, given what exists.
pub fn plan(spec: &Spec, names: &Names, seen: &Observed) -> Plan {
    let region = spec.region.as_str();
    let mut items = Vec::new();
    let worker_group = seen
        .worker_sg
        .ours()
        .map(|g| g.id.clone())
        .unwrap_or_else(|| names.worker_sg.clone());
    items.push(placement_item(region, &seen.placement));
    if spec.worker.is_some() || seen.worker_sg.ours().is_some() {
        items.push(group_item(
            "worker security group",
            &names.worker_sg,
            region,
            &seen.worker_sg,
            &worker_rules(spec),
            &seen.placement,
        ));
    }
    items.push(group_item(
        "database security group",
        &names.db_sg,
        region,
        &seen.db_sg,
        &db_rules(spec, Some(&worker_group)),
        &seen.placement,
    ));
    items.push(subnet_group_item(
        "DB subnet group",
        &names.subnet_group,
        region,
        &seen.subnet_group,
        &seen.placement,
    ));
    if spec.ssh_public_key.is_some() || seen.key_pair.ours().is_some() {
        items.push(Item {
            resource: "SSH key pair",
            name: names.key_pair.clone(),
            region: region.to_string(),
            action: simple(&seen.key_pair),
            detail: "imported from the public key given with --ssh-public-key".into(),
        });
    }
    items.push(Item {
        resource: "DB parameter group",
        name: names.param_group.clone(),
        region: region.to_string(),
        action: simple(&seen.param_group),
        detail: format!(
            "postgres{}, rds.force_ssl=1 (TLS required){}",
            spec.db.engine_major,
            match spec.db.max_locks_per_transaction {
                Some(n) => format!(
                    ", max_locks_per_transaction={n} (the schema's restore locks every relation \
                     in one transaction)"
                ),
                None => String::new(),
            }
        ),
    });
    items.push(Item {
        resource: "master password secret",
        name: names.secret.clone(),
        region: region.to_string(),
        action: simple(&seen.secret),
        detail: "Secrets Manager; generated here, never printed".into(),
    });
    let db_detail = format!(
        "PostgreSQL {}, {}, gp3 {} GiB{}, {}, encrypted, backups {} days, deletion protection, \
         user {}, database {}; {}",
        spec.db.engine_major,
        spec.db.instance_class,
        spec.db.storage_gb,
        match spec.db.max_storage_gb {
            Some(m) => format!(" (autoscaling to {m} GiB)"),
            None => " (autoscaling off)".into(),
        },
        if spec.db.multi_az {
            "Multi-AZ (a standby in a second zone, twice the instance cost)"
        } else {
            "single-AZ (--multi-az recommended for production: a standby in a second zone, \
             twice the instance cost)"
        },
        spec.db.backup_retention_days,
        spec.db.master_username,
        spec.db.db_name,
        support_note(spec.db.engine_major, spec.db.extended_support),
    );
    let support_ended = super::spec::standard_support_end(spec.db.engine_major)
        .filter(|end| *end < seen.today.as_str());
    items.push(Item {
        resource: "RDS primary",
        name: names.db.clone(),
        region: region.to_string(),
        // An existing database is never modified: where it differs from the spec, the detail
        // says so and provision leaves it as it is.
        action: match (&seen.db, support_ended) {
            (Found::Missing, Some(end)) if !spec.db.extended_support => Action::Conflict {
                reason: format!(
                    "RDS standard support of PostgreSQL {} ended on {end}; with Extended Support \
                     off RDS creates no new database on it: pass --engine-major {} (a newer \
                     major; the copy upgrades on the way), or --extended-support (billed per \
                     vCPU-hour)",
                    spec.db.engine_major,
                    super::spec::default_engine_major(spec.db.engine_major, &seen.today)
                ),
            },
            (Found::Missing, _) => {
                offer_action(seen.db_offer.as_ref(), spec, region).unwrap_or(Action::Create)
            }
            (found, _) => simple(found),
        },
        detail: match &seen.db {
            Found::Ours(d) => {
                let differs =
                    d.class != spec.db.instance_class || d.storage_gb != spec.db.storage_gb;
                format!(
                    "{db_detail}; now {} {} {} GiB, {}{}",
                    d.engine_version,
                    d.class,
                    d.storage_gb,
                    d.status,
                    if differs {
                        " (differs from the settings; left as is)"
                    } else {
                        ""
                    }
                )
            }
            _ => db_detail,
        },
    });
    if let Some(rr) = &spec.replica_region {
        items.push(placement_item(rr, &seen.replica_placement));
        items.push(group_item(
            "replica security group",
            &names.replica_sg,
            rr,
            &seen.replica_sg,
            &replica_rules(spec),
            &seen.replica_placement,
        ));
        items.push(subnet_group_item(
            "replica DB subnet group",
            &names.subnet_group,
            rr,
            &seen.replica_subnet_group,
            &seen.replica_placement,
        ));
        items.push(Item {
            resource: "replica DB parameter group",
            name: names.param_group.clone(),
            region: rr.clone(),
            action: simple(&seen.replica_param_group),
            detail: "rds.force_ssl=1 (TLS required)".into(),
        });
        items.push(Item {
            resource: "RDS cross-region read replica",
            name: names.replica.clone(),
            region: rr.clone(),
            action: match &seen.replica {
                Found::Missing => {
                    offer_action(seen.replica_offer.as_ref(), spec, rr).unwrap_or(Action::Create)
                }
                other => simple(other),
            },
            detail: format!("of {}, {}, encrypted", names.db, spec.db.instance_class),
        });
    }
    items.push(Item {
        resource: "S3 archive bucket",
        name: names.bucket.clone(),
        region: region.to_string(),
        action: match &seen.bucket {
            Found::Ours(b) if !b.tagged => Action::Change {
                changes: vec!["tag it (an interrupted run created it untagged)".into()],
            },
            other => simple(other),
        },
        detail: "private, all public access blocked, encrypted (SSE-S3), holds the final backup \
                 and the worker's job"
            .into(),
    });
    if let Some(w) = &spec.worker {
        items.push(Item {
            resource: "EC2 worker",
            name: names.worker.clone(),
            region: region.to_string(),
            action: match seen.worker_verdict(seen.at) {
                Some(crate::aws::bootstrap::Verdict::Keep) => Action::Exists,
                Some(crate::aws::bootstrap::Verdict::Replace(why)) => Action::Change {
                    changes: vec![format!("terminate it and launch a new one: {why}")],
                },
                None => worker_type_action(seen, w, region).unwrap_or(Action::Create),
            },
            detail: match seen.workers.first() {
                Some(i) => format!("{} {} {}", i.id, i.instance_type, i.state),
                None => format!(
                    "{} ({}), Ubuntu 24.04 LTS, PostgreSQL {} client, runs `heroku2rds worker` under systemd",
                    w.instance_type, w.arch, w.pg_client_major
                ),
            },
        });
    }
    Plan {
        name: spec.name.clone(),
        account: seen.account.clone(),
        items,
    }
}

/// A conflict when RDS does not offer the class for the major in `region`.
fn offer_action(offer: Option<&Offer>, spec: &Spec, region: &str) -> Option<Action> {
    let o = offer.filter(|o| !o.offered)?;
    Some(Action::Conflict {
        reason: format!(
            "RDS offers no {} for PostgreSQL {} in {region}: {}",
            o.class,
            spec.db.engine_major,
            match &o.alternative {
                Some(a) => format!("pass --db-instance-class {a} (offered there)"),
                None => "pass --db-instance-class with a class the RDS console offers for \
                         that version and region, or another --engine-major"
                    .to_string(),
            }
        ),
    })
}

/// A conflict when EC2 has no such worker type, or it does not run the worker's architecture
/// (RunInstances refuses an arm64 image on an x86 type and the reverse).
fn worker_type_action(
    seen: &Observed,
    w: &super::spec::WorkerSpec,
    region: &str,
) -> Option<Action> {
    let t = seen.worker_type.as_ref()?;
    let want = if w.arch == "arm64" { "arm64" } else { "x86_64" };
    let reason = match &t.architectures {
        None => format!(
            "EC2 has no instance type {} in {region}: pass --worker-instance-type with one it \
             has (e.g. {})",
            t.name,
            super::spec::worker_type_for(0.0, &w.arch)
        ),
        Some(archs) if !archs.iter().any(|a| a == want) => format!(
            "the worker type {} runs {}, not {}: pass --worker-instance-type {} or --worker-arch {}",
            t.name,
            archs.join("/"),
            w.arch,
            super::spec::worker_type_for(0.0, &w.arch),
            if w.arch == "arm64" { "amd64" } else { "arm64" }
        ),
        Some(_) => return None,
    };
    Some(Action::Conflict { reason })
}

/// The major's support window as the plan shows it.
fn support_note(major: u32, extended: bool) -> String {
    let end = match super::spec::standard_support_end(major) {
        Some(d) => format!("standard support of PostgreSQL {major} until {d}"),
        None => format!("standard support end of PostgreSQL {major} not known to heroku2rds"),
    };
    if extended {
        format!("{end}; Extended Support on (billed per vCPU-hour after that date)")
    } else {
        format!("{end}; Extended Support off (--extended-support to keep the major after it)")
    }
}

/// The plan as text for a terminal.
pub fn render(plan: &Plan) -> String {
    let mut out = format!(
        "AWS plan for migration {} (account {}):\n",
        plan.name, plan.account
    );
    for i in &plan.items {
        let action = match &i.action {
            Action::Create => "create".to_string(),
            Action::Exists => "exists".to_string(),
            Action::Change { .. } => "change".to_string(),
            Action::Conflict { .. } => "CONFLICT".to_string(),
        };
        let _ = writeln!(
            out,
            "  {action:<8} {:<30} {} ({})\n           {}",
            i.resource, i.name, i.region, i.detail
        );
        match &i.action {
            Action::Change { changes } => {
                for c in changes {
                    let _ = writeln!(out, "           - {c}");
                }
            }
            Action::Conflict { reason } => {
                let _ = writeln!(out, "           ! {reason}");
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::observe::{Subnet, WorkerType};
    use crate::aws::spec::{DbSpec, WorkerSpec};

    fn spec() -> Spec {
        Spec {
            name: "acme".into(),
            region: "us-east-2".into(),
            replica_region: Some("us-east-1".into()),
            operator_cidr: "203.0.113.7/32".into(),
            app_cidrs: vec![],
            open_to_internet: false,
            ssh_public_key: None,
            network: Default::default(),
            replica_network: Default::default(),
            db: DbSpec {
                instance_class: "db.m7g.large".into(),
                storage_gb: 20,
                max_storage_gb: None,
                engine_major: 16,
                db_name: "app".into(),
                master_username: "app".into(),
                backup_retention_days: 7,
                multi_az: false,
                extended_support: false,
                max_locks_per_transaction: None,
            },
            worker: Some(WorkerSpec {
                instance_type: "m7i.large".into(),
                arch: "amd64".into(),
                pg_client_major: 15,
            }),
        }
    }

    fn empty() -> Observed {
        let placement = Placement {
            vpc_id: Some("vpc-1".into()),
            subnets: vec![
                Subnet {
                    id: "subnet-a".into(),
                    vpc_id: "vpc-1".into(),
                    zone: "us-east-2a".into(),
                },
                Subnet {
                    id: "subnet-b".into(),
                    vpc_id: "vpc-1".into(),
                    zone: "us-east-2b".into(),
                },
            ],
            default_vpc: true,
            problem: None,
        };
        Observed {
            account: "123456789012".into(),
            today: "2026-12-03".into(),
            at: std::time::SystemTime::UNIX_EPOCH,
            placement: placement.clone(),
            replica_placement: placement,
            subnet_group: Found::Missing,
            replica_subnet_group: Found::Missing,
            db_offer: None,
            replica_offer: None,
            worker_type: None,
            worker_sg: Found::Missing,
            db_sg: Found::Missing,
            replica_sg: Found::Missing,
            key_pair: Found::Missing,
            param_group: Found::Missing,
            replica_param_group: Found::Missing,
            db: Found::Missing,
            replica: Found::Missing,
            bucket: Found::Missing,
            secret: Found::Missing,
            workers: vec![],
            worker_bootstrap: None,
        }
    }

    #[test]
    fn nothing_yet_means_create_everything_and_no_rule_opens_the_internet() {
        let s = spec();
        let names = Names::new("acme", "123456789012", "us-east-2", 16);
        let p = plan(&s, &names, &empty());
        assert!(
            p.items
                .iter()
                .all(|i| i.action == Action::Create || i.resource == "VPC and subnets"),
            "{p:?}"
        );
        assert_eq!(p.items.len(), 14);
        assert_eq!(
            p.items
                .iter()
                .filter(|i| i.resource.ends_with("DB subnet group"))
                .count(),
            2
        );
        for rules in [
            db_rules(&s, Some("sg-1")),
            replica_rules(&s),
            worker_rules(&s),
        ] {
            for r in rules {
                assert!(
                    r.peer != Peer::Cidr("0.0.0.0/0".into()) && r.peer != Peer::Cidr("::/0".into())
                );
            }
        }
        assert!(worker_rules(&s).is_empty());
        let db = db_rules(&s, Some("sg-1"));
        assert_eq!(db.len(), 2);
        assert!(db.contains(&Rule {
            port: 5432,
            peer: Peer::Group("sg-1".into())
        }));
    }

    #[test]
    fn drifted_rules_become_changes_and_foreign_resources_conflicts() {
        let s = spec();
        let names = Names::new("acme", "123456789012", "us-east-2", 16);
        let mut seen = empty();
        seen.worker_sg = Found::Ours(Group {
            id: "sg-w".into(),
            vpc_id: Some("vpc-1".into()),
            ingress: vec![],
        });
        seen.db_sg = Found::Ours(Group {
            id: "sg-d".into(),
            vpc_id: Some("vpc-1".into()),
            ingress: vec![
                Rule {
                    port: 5432,
                    peer: Peer::Cidr("198.51.100.1/32".into()),
                },
                Rule {
                    port: 5432,
                    peer: Peer::Group("sg-w".into()),
                },
            ],
        });
        seen.bucket = Found::Foreign {
            reason: "not ours".into(),
        };
        let p = plan(&s, &names, &seen);
        let db = p
            .items
            .iter()
            .find(|i| i.resource == "database security group")
            .unwrap();
        assert_eq!(
            db.action,
            Action::Change {
                changes: vec![
                    "allow 5432 from 203.0.113.7/32".into(),
                    "revoke 5432 from 198.51.100.1/32".into()
                ]
            }
        );
        assert_eq!(p.conflicts(), vec!["not ours".to_string()]);
        assert!(!p.converged());
    }

    #[test]
    fn nowhere_to_go_and_moved_vpcs_are_conflicts() {
        let s = spec();
        let names = Names::new("acme", "123456789012", "us-east-2", 16);
        let mut seen = empty();
        seen.replica_placement = Placement {
            problem: Some("no default VPC in us-east-1: pass --replica-vpc-id".into()),
            ..Default::default()
        };
        seen.db_sg = Found::Ours(Group {
            id: "sg-d".into(),
            vpc_id: Some("vpc-old".into()),
            ingress: vec![],
        });
        seen.subnet_group = Found::Ours(SubnetGroup {
            vpc_id: "vpc-1".into(),
            subnet_ids: vec!["subnet-b".into(), "subnet-a".into()],
        });
        let p = plan(&s, &names, &seen);
        let c = p.conflicts();
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].contains("vpc-old") && c[0].contains("vpc-1"), "{c:?}");
        assert!(c[1].contains("--replica-vpc-id"), "{c:?}");
        let group = p
            .items
            .iter()
            .find(|i| i.resource == "DB subnet group")
            .unwrap();
        assert_eq!(
            group.action,
            Action::Exists,
            "same subnets in another order"
        );
    }

    #[test]
    fn a_major_past_standard_support_needs_extended_support_or_a_newer_major() {
        let mut s = spec();
        s.db.engine_major = 13;
        let names = Names::new("acme", "123456789012", "us-east-2", 13);
        let p = plan(&s, &names, &empty());
        let c = p.conflicts();
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(
            c[0].contains("2026-02-28") && c[0].contains("--engine-major 14"),
            "{c:?}"
        );
        s.db.extended_support = true;
        assert!(plan(&s, &names, &empty()).conflicts().is_empty());
        s.db.extended_support = false;
        s.db.engine_major = 16;
        let p = plan(&s, &names, &empty());
        assert!(p.conflicts().is_empty());
        assert!(render(&p).contains("standard support of PostgreSQL 16 until 2029-02-28"));
    }

    #[test]
    fn classes_and_types_the_region_does_not_offer_are_conflicts() {
        let s = spec();
        let names = Names::new("acme", "123456789012", "us-east-2", 16);
        let mut seen = empty();
        seen.db_offer = Some(Offer {
            class: "db.m7g.large".into(),
            offered: false,
            alternative: Some("db.m6g.large".into()),
        });
        seen.replica_offer = Some(Offer {
            class: "db.m7g.large".into(),
            offered: true,
            alternative: None,
        });
        seen.worker_type = Some(WorkerType {
            name: "m7i.large".into(),
            architectures: Some(vec!["x86_64".into()]),
        });
        let c = plan(&s, &names, &seen).conflicts();
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].contains("--db-instance-class db.m6g.large"), "{c:?}");
        let mut arm = spec();
        arm.worker.as_mut().unwrap().arch = "arm64".into();
        seen.db_offer = None;
        let c = plan(&arm, &names, &seen).conflicts();
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(
            c[0].contains("runs x86_64, not arm64") && c[0].contains("m7g.large"),
            "{c:?}"
        );
        seen.worker_type = Some(WorkerType {
            name: "m7i.huge".into(),
            architectures: None,
        });
        let c = plan(&s, &names, &seen).conflicts();
        assert!(c[0].contains("no instance type m7i.huge"), "{c:?}");
    }

    #[test]
    fn a_schema_of_many_relations_raises_the_lock_table_in_the_parameter_group() {
        let mut s = spec();
        let names = Names::new("acme", "123456789012", "us-east-2", 16);
        s.db.max_locks_per_transaction =
            Some(crate::aws::spec::locks_per_transaction_for(60_000)).filter(|n| *n > 64);
        assert_eq!(s.db.max_locks_per_transaction, Some(768));
        assert!(render(&plan(&s, &names, &empty())).contains("max_locks_per_transaction=768"));
        assert_eq!(crate::aws::spec::locks_per_transaction_for(4_000), 64);
    }

    #[test]
    fn open_to_internet_only_when_asked() {
        let mut s = spec();
        s.open_to_internet = true;
        let rules = db_rules(&s, None);
        assert!(rules.contains(&Rule {
            port: 5432,
            peer: Peer::Cidr("0.0.0.0/0".into())
        }));
        s.ssh_public_key = Some("ssh-ed25519 AAAA".into());
        assert_eq!(worker_rules(&s).len(), 1);
    }
}
