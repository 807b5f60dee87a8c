//! `clean`: removes the tool's objects from the source (and its state from the target).

use crate::cli::CleanArgs;
use crate::error::Result;
use crate::pg::clean;
use crate::pg::conn::ConnSpec;

pub async fn run(a: CleanArgs) -> Result<u8> {
    let source = ConnSpec::parse(&a.source.source, "source")?;
    let target = a
        .target
        .as_deref()
        .map(|t| ConnSpec::parse(t, "target"))
        .transpose()?;
    let report = clean::run(&source, target.as_ref(), a.force).await?;
    println!("{report}");
    Ok(0)
}
