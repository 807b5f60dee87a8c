//! Integration tests: real PostgreSQL clusters, the compiled binary as a black box, the AWS
//! emulator and the fake Heroku from localstack/. One test binary; this tree is its map.

/// The harness: clusters and databases, the binary, the fakes, the fault proxy, workloads.
mod support;

/// The replication engine against real clusters, no cloud: copy, follow, verify, faults.
mod engine {
    mod copy;
    mod faults;
    mod follow;
    mod verify;
}

/// The cloud sides on their stand-ins: AWS (moto), the Heroku client, the archive.
mod cloud {
    mod archive;
    mod aws;
    mod heroku;
}

/// Whole flows across engine and cloud: the cutover, the migration end to end.
mod flows {
    mod cutover;
    mod migrate;
    mod verification;
    mod writers;
}

/// The worker's user-data run for real under systemd in a Debian container (systemd-nspawn).
mod container {
    mod user_data;
}

/// The command-line contract on bad input: clear errors, exit codes, nothing changed.
mod contract {
    mod bad_input;
    mod bad_input_table;
}
