//! `plan`, `provision` and `teardown`: the AWS side, observed, planned, then applied.

use std::time::Duration;

use super::print_json;
use crate::aws::plan as aws_plan;
use crate::aws::setup;
use crate::cli::{prompt, resolve, PlanArgs, ProvisionArgs, TeardownArgs};
use crate::error::Result;

pub async fn plan(a: PlanArgs) -> Result<u8> {
    let r = resolve::resolve(&a.aws).await?;
    let mut p = setup::make_plan(&r).await?;
    setup::check_worker_binary(&r, &mut p)?;
    if a.json {
        print_json(&p.plan)?;
    } else {
        print!("{}", aws_plan::render(&p.plan));
    }
    Ok(0)
}

pub async fn provision(a: ProvisionArgs) -> Result<u8> {
    let r = resolve::resolve(&a.aws).await?;
    let mut p = setup::make_plan(&r).await?;
    setup::check_worker_binary(&r, &mut p)?;
    if !a.json {
        print!("{}", aws_plan::render(&p.plan));
    }
    if a.dry_run {
        if a.json {
            print_json(&setup::ProvisionOutput {
                plan: &p.plan,
                result: None,
            })?;
        }
        return Ok(0);
    }
    if !p.plan.converged() && !a.yes {
        prompt::confirm("Create and change these AWS resources?", "provision")?;
    }
    let plan_copy = p.plan.clone();
    let done = setup::provision(&r, p, Duration::from_secs(a.wait_minutes.max(1) * 60)).await?;
    if a.json {
        print_json(&setup::ProvisionOutput {
            plan: &plan_copy,
            result: Some(&done),
        })?;
    } else {
        let created = done.steps.iter().filter(|d| d.outcome != "exists").count();
        println!("provisioned: {created} resource(s) created or changed, the rest already existed");
        if let Some((host, port)) = &done.endpoint {
            println!("RDS endpoint: {host}:{port}");
        }
        println!(
            "master password: in Secrets Manager, secret {} (aws secretsmanager get-secret-value --secret-id {} --region {})",
            done.secret, done.secret, r.spec.region
        );
        println!("archive bucket: s3://{}", done.bucket);
        if let Some(w) = &done.worker {
            println!("worker: {w} (replication runs there under systemd; `heroku2rds status` shows progress)");
        }
    }
    Ok(0)
}

pub async fn teardown(a: TeardownArgs) -> Result<u8> {
    let t = resolve::resolve_teardown(&a)?;
    let found = setup::find(&t).await?;
    if !a.yes {
        if a.delete_target {
            prompt::confirm_typed(&t.name)?;
        } else {
            prompt::confirm(
                &format!(
                    "Remove the worker side of migration {} (the database stays)?",
                    t.name
                ),
                "teardown",
            )?;
        }
    }
    let report = setup::teardown(&found, &t).await?;
    if a.json {
        print_json(&report)?;
        return Ok(0);
    }
    if report.removed.is_empty() {
        println!(
            "removed: nothing (nothing of migration {} was left to remove)",
            t.name
        );
    } else {
        println!("removed:");
        for r in &report.removed {
            println!("  {r}");
        }
    }
    if !report.kept.is_empty() {
        println!("kept:");
        for k in &report.kept {
            println!("  {k}");
        }
    }
    Ok(0)
}
