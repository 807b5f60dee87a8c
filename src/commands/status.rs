//! `status`: the progress recorded on the target. Read-only.

use super::print_json;
use crate::cli::StatusArgs;
use crate::error::Result;
use crate::pg::conn::ConnSpec;
use crate::pg::status;

pub async fn run(a: StatusArgs) -> Result<u8> {
    let target = ConnSpec::parse(&a.target.target, "target")?;
    let s = status::read(&target).await?;
    if a.json {
        print_json(&s)?;
    } else {
        print!("{}", status::render(&s));
    }
    Ok(0)
}
