//! `verify`: compares source and target; exit 1 on any difference.

use super::print_json;
use crate::cli::render::{self, Mode};
use crate::cli::VerifyArgs;
use crate::error::{Kind, Result};
use crate::pg::conn::ConnSpec;
use crate::pg::verify;

pub async fn run(a: VerifyArgs) -> Result<u8> {
    let source = ConnSpec::parse(&a.source.source, "source")?;
    let target = ConnSpec::parse(&a.target.target, "target")?;
    // Progress on stderr; stdout holds the report (one JSON document with --json).
    let sink = render::sink(Mode::detect(false));
    let report = verify::run(&source, &target, a.jobs.max(1), sink.as_ref()).await?;
    drop(sink);
    if a.json {
        print_json(&report)?;
    } else {
        print!("{}", verify::render(&report));
    }
    Ok(if report.equal {
        0
    } else {
        Kind::Differences.exit_code() as u8
    })
}
