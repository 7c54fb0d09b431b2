//! Tamper-evident audit records: the `audit-sidecar` that seals an
//! application's records into a signed hash chain and ships them, and
//! `audit verify` that proves such a log untampered.
//!
//! Flow: [`intake`] (loopback HTTP, followed files) → [`sidecar`] (one task
//! seals with [`chain`] and the tenant's [`keys`]) → [`sink::Shipper`]
//! (bounded [`spool`], then stdout, a file or an HTTP(S) SIEM). The record
//! format is in [`record`]; [`verify`] reads it back.
//!
//! [`sink::Shipper`] is generic: any producer of JSON lines (the operator's
//! security event stream) can ship through it with the same spool and retries.

pub mod chain;
pub mod cli;
pub mod intake;
pub mod keys;
pub mod record;
pub mod sidecar;
pub mod sink;
pub mod spool;
pub mod verify;
