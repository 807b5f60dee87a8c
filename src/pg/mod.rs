//! The replication engine: moves data between two PostgreSQL URLs. Knows nothing about Heroku or
//! AWS.

pub mod apply;
pub mod capture;
pub mod catalog;
pub mod clean;
pub mod conn;
pub mod copy;
pub mod fence;
pub mod pool;
pub mod preflight;
pub mod progress;
pub mod replicate;
pub mod schema;
pub mod sequences;
pub mod status;
pub mod store;
pub mod verify;
