//! Heroku: the Platform API and the Postgres data API (see DESIGN.md, "Heroku").

pub mod addons;
pub mod app;
pub mod backups;
pub mod client;
pub mod databases;
pub mod poll;
