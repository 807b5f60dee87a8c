//! heroku2rds: move a production PostgreSQL database from Heroku to Amazon RDS with seconds of
//! write downtime. See DESIGN.md for the architecture.

pub mod archive;
pub mod aws;
pub mod cancel;
pub mod cli;
pub mod commands;
pub mod cutover;
pub mod error;
pub mod heroku;
pub mod migrate;
pub mod pg;
pub mod retry;
