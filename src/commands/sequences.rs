//! `sync-sequences` and `refresh-matviews`: the two steps the cutover also runs, on their own.

use crate::cli::{PairArgs, TargetArgs};
use crate::error::Result;
use crate::pg::conn::ConnSpec;
use crate::pg::sequences;

pub async fn sync(a: PairArgs) -> Result<u8> {
    let source = ConnSpec::parse(&a.source.source, "source")?;
    let target = ConnSpec::parse(&a.target.target, "target")?;
    let (src, tgt) = (source.connect().await?, target.connect().await?);
    sequences::check_target(&src, &tgt).await?;
    let n = sequences::sync(&src, &tgt).await?;
    println!("set {n} sequence(s) on the target to the source's values");
    Ok(0)
}

pub async fn refresh_matviews(a: TargetArgs) -> Result<u8> {
    let target = ConnSpec::parse(&a.target.target, "target")?;
    let n = sequences::refresh_matviews(&target.connect().await?).await?;
    println!("refreshed {n} materialized view(s) on the target");
    Ok(0)
}
