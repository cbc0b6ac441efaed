//! Upstream actor. TODO(lead)
pub mod poller;
