//! The harness every test uses; no test lives here.
//!
//! - [`clusters`]: throwaway PostgreSQL clusters and a pair of fresh databases per test, the
//!   scratch root, and what is kept when a test fails;
//! - [`binary`]: the compiled heroku2rds run as a black box;
//! - [`fake_heroku`] and [`moto`]: the fake Heroku and the AWS emulator, shared or private;
//! - [`proxy`]: the in-process TCP fault proxy;
//! - [`workloads`]: the application stand-ins that write during a migration, and their logs;
//! - [`rng`]: the one seeded random generator;
//! - [`host`]: free ports, root or not, signals, clean-up after the test process.

use std::path::{Path, PathBuf};

pub mod binary;
pub mod clusters;
pub mod fake_heroku;
pub mod host;
pub mod moto;
pub mod proxy;
pub mod rng;
pub mod workloads;

/// A file of this repository.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}
