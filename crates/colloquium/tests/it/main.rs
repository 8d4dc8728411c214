//! Integration tests: the real `colloquium` binary, driven over HTTP on 127.0.0.1.
// The harness is test code outside `#[test]` fns, where panicking on failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ai;
mod alerts;
mod anomaly;
mod backup;
mod cli;
mod compat;
mod computo;
mod crash;
mod dashboard;
mod faults;
mod foundations;
mod grafana;
mod harness;
mod ingest;
mod kafka;
mod lanes;
mod pipelines;
mod processors;
mod reliability;
mod reload;
mod security;
mod storage;
mod tap;
mod tcp;
mod top;
mod windows;
