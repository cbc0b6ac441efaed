//! TODO(mcp helper)
