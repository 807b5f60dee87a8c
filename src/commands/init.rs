//! `init`: writes heroku2rds.toml with every setting and its default.

use crate::aws::spec;
use crate::cli::{config, InitArgs};
use crate::error::{Error, Result};

pub fn run(a: InitArgs) -> Result<u8> {
    let name = a.name.clone().unwrap_or_else(|| a.app.clone());
    spec::validate_name(&name)?;
    spec::validate_region(&a.region, "--region")?;
    if let Some(rr) = &a.replica_region {
        spec::validate_region(rr, "--replica-region")?;
    }
    if a.config.exists() && !a.force {
        return Err(
            Error::usage(format!("{} exists already", a.config.display()))
                .with_fix("edit it, or pass --force to overwrite it"),
        );
    }
    let text = config::template(&a.app, &name, &a.region, a.replica_region.as_deref());
    std::fs::write(&a.config, text)
        .map_err(|e| Error::usage(format!("cannot write {}", a.config.display())).with_source(e))?;
    println!(
        "wrote {} (edit it, then run `heroku2rds plan`)",
        a.config.display()
    );
    Ok(0)
}
