//! Bad input: clear message, the contract's exit code, nothing changed.
