//! Integration tests: real PostgreSQL clusters, the compiled binary as a black box.

mod harness;
mod proxy;

mod archive;
mod aws;
mod bad_input;
mod bad_input_table;
mod copy;
mod cutover;
mod faults;
mod follow;
mod heroku;
mod migrate;
mod verify;
