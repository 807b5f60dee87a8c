//! Security groups: created when missing, their inbound rules converged to exactly the wanted
//! set (the database's 5432 from the worker's group and the operator's range; SSH on request).

use super::*;

/// Creates the group if missing and brings its inbound rules to exactly `want`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn ensure_group(
    ec2: &aws_sdk_ec2::Client,
    found: &Found<observe::Group>,
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
                    ingress: vec![],
                },
            )
        }
    };
    let (add, remove) = rule_diff(&current, want);
    if !add.is_empty() {
        match ec2
            .authorize_security_group_ingress()
            .group_id(&id)
            .set_ip_permissions(Some(add.iter().map(permission).collect()))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if code(&e) == Some("InvalidPermission.Duplicate") => {}
            Err(e) => return Err(sdk("ec2:AuthorizeSecurityGroupIngress", e)),
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
