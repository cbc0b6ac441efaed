//! Test support shared by the integration tests: a scriptable MCP upstream,
//! a test OAuth2 token endpoint, the interop peers (official Python SDK, npm server-everything), the interop
//! clients (official SDK clients and the inspector CLI, `clients.rs`) and a raw
//! MCP client to talk to either.
//!
//! Declared from a test crate root with
//! `#[path = "../support/mod.rs"] mod support;`.
#![allow(dead_code)]

pub mod clients;
pub mod mcp_client;
pub mod peers;
pub mod recorder;
pub mod token_endpoint;
pub mod upstream;
