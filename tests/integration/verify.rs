//! `verify` finds each planted difference and names the key.
