//! Security groups: created when missing, their inbound rules converged to exactly the wanted
//! set (the database's 5432 from the worker's group and the operator's range; SSH on request).

use super::*;

/// Creates the group if missing and brings its inbound rules to exactly `want`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn ensure_group(
    ec2: &aws_sdk_ec2::Client,
    found: &Found<observe::Group>,
    vpc_id: Option<&str>,
    group_name: &str,
    migration: &str,
    description: &str,
    want: &BTreeSet<Rule>,
    resource: &'static str,
    out: &mut Provisioned,
) -> Result<String> {
    let (id, current) = match found {
        Found::Ours(g) => (g.id.clone(), g.clone()),
        _ => {
            let created = ec2
                .create_security_group()
                .group_name(group_name)
                .description(description)
                .set_vpc_id(vpc_id.map(str::to_string))
                .tag_specifications(tag_spec(ResourceType::SecurityGroup, migration, group_name))
                .send()
                .await
                .map_err(|e| sdk("ec2:CreateSecurityGroup", e))?;
            let id = created.group_id().unwrap_or_default().to_string();
            out.record(resource, group_name, "created");
            (
                id.clone(),
                observe::Group {
                    id,
                    vpc_id: vpc_id.map(str::to_string),
                    ingress: vec![],
                },
            )
        }
    };
    let (add, remove) = rule_diff(&current, want);
    if !add.is_empty() {
        // EC2 is eventually consistent: a group just created (or the worker group a rule names)
        // can be unknown to the next call for a few seconds.
        let mut settle = Settle::new();
        loop {
            match ec2
                .authorize_security_group_ingress()
                .group_id(&id)
                .set_ip_permissions(Some(add.iter().map(permission).collect()))
                .send()
                .await
            {
                Ok(_) => break,
                Err(e) if code(&e) == Some("InvalidPermission.Duplicate") => break,
                Err(e) if code(&e) == Some("InvalidGroup.NotFound") && settle.again().await => {}
                Err(e) => return Err(sdk("ec2:AuthorizeSecurityGroupIngress", e)),
            }
        }
    }
    if !remove.is_empty() {
        ec2.revoke_security_group_ingress()
            .group_id(&id)
            .set_ip_permissions(Some(remove.iter().map(permission).collect()))
            .send()
            .await
            .map_err(|e| sdk("ec2:RevokeSecurityGroupIngress", e))?;
    }
    if (!add.is_empty() || !remove.is_empty()) && matches!(found, Found::Ours(_)) {
        out.record(resource, group_name, "changed");
    } else if matches!(found, Found::Ours(_)) {
        out.record(resource, group_name, "exists");
    }
    Ok(id)
}

pub(super) fn permission(r: &Rule) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(r.port)
        .to_port(r.port);
    match &r.peer {
        Peer::Cidr(c) if c.contains(':') => b
            .ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build())
            .build(),
        Peer::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()).build(),
        Peer::Group(g) => b
            .user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build())
            .build(),
    }
}

/// Bounded waiting for EC2's eventual consistency: a resource just created may be unknown to
/// the next call for a few seconds (AWS's guidance: retry with backoff).
pub(super) struct Settle {
    start: Instant,
    delay: Duration,
}

impl Settle {
    pub(super) fn new() -> Settle {
        Settle {
            start: Instant::now(),
            delay: Duration::from_millis(250),
        }
    }

    /// Sleeps and returns true while the bound (60 s) is not reached.
    pub(super) async fn again(&mut self) -> bool {
        if self.start.elapsed() >= Duration::from_secs(60) {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(8));
        true
    }
}

/// The DB subnet group of one region: created from the placement's subnets when missing.
pub(super) async fn ensure_subnet_group(
    rds: &aws_sdk_rds::Client,
    found: &Found<observe::SubnetGroup>,
    placement: &observe::Placement,
    names: &Names,
    migration: &str,
    resource: &'static str,
    out: &mut Provisioned,
) -> Result<()> {
    if found.ours().is_some() {
        return Ok(());
    }
    let subnets: Vec<String> = placement.subnets.iter().map(|s| s.id.clone()).collect();
    let mut settle = Settle::new();
    loop {
        match rds
            .create_db_subnet_group()
            .db_subnet_group_name(&names.subnet_group)
            .db_subnet_group_description(format!("heroku2rds {migration}"))
            .set_subnet_ids(Some(subnets.clone()))
            .set_tags(Some(rds_tags(migration)))
            .send()
            .await
        {
            Ok(_) => break,
            Err(e) if code(&e) == Some("DBSubnetGroupAlreadyExists") => break,
            Err(e) if code(&e) == Some("InvalidSubnet") && settle.again().await => {}
            Err(e) => return Err(sdk("rds:CreateDBSubnetGroup", e)),
        }
    }
    out.record(resource, &names.subnet_group, "created");
    Ok(())
}
