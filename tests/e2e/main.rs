//! End-to-end tests: one binary (zero2prod style), one module per behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod attempt_gate;
mod auth;
mod binary;
mod cache_hints;
mod compression;
mod conformance;
mod conformance_server;
mod discovery;
mod gateway;
mod gateway_calls;
mod gateway_interop;
mod helpers;
mod interop;
mod interop_modern;
mod listen_stream;
mod modern;
mod openapi;
mod probe_call;
mod process;
mod push_stream;
mod registrations;
mod reload;
#[cfg(target_os = "linux")]
mod sd_notify;
mod security_bounds;
mod security_http;
mod security_outbound;
mod security_secrets;
mod security_store;
mod stdio;
mod store;
mod tool_validation;
mod upstream_selftest;
