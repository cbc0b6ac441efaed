//! Errors of the MCP client. TODO(mcp helper): complete.

/// Why an MCP operation failed. `Display` is a human sentence; the cause
/// chain is reachable through `source()`.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("{0}")]
    Other(String),
}
