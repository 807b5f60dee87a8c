//! `preflight`: what would break the migration, and how to fix it. Read-only.

use super::print_json;
use crate::cli::PreflightArgs;
use crate::error::{Kind, Result};
use crate::pg::conn::ConnSpec;
use crate::pg::preflight;

pub async fn run(a: PreflightArgs) -> Result<u8> {
    let source = ConnSpec::parse(&a.source.source, "source")?;
    let target = a
        .target
        .as_deref()
        .map(|t| ConnSpec::parse(t, "target"))
        .transpose()?;
    let report = preflight::run(&source, target.as_ref(), a.keyless.into()).await?;
    if a.json {
        print_json(&serde_json::json!({ "blocked": report.blocked(), "report": report }))?;
    } else {
        print!("{}", preflight::render(&report));
    }
    Ok(if report.blocked() {
        Kind::Blocked.exit_code() as u8
    } else {
        0
    })
}
