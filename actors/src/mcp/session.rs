//! Session internals. TODO(mcp helper): implement.
use serde_json::value::RawValue;
use serde_json::Value;

use super::*;

pub(super) struct Inner {}

pub(super) async fn connect(_target: &Target, _opts: ClientOptions) -> Result<Session, McpError> {
    Err(McpError::Other("not implemented".into()))
}

impl Inner {
    pub(super) fn info(&self) -> ServerInfo {
        unimplemented!()
    }
    pub(super) async fn request(&self, _m: &str, _p: Option<Value>) -> Result<Box<RawValue>, McpError> {
        unimplemented!()
    }
    pub(super) async fn notify(&self, _m: &str, _p: Option<Value>) -> Result<(), McpError> {
        unimplemented!()
    }
    pub(super) async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        unimplemented!()
    }
    pub(super) async fn discover(&self) -> Result<Inventory, McpError> {
        unimplemented!()
    }
    pub(super) fn take_notifications(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Notification>> {
        None
    }
    pub(super) fn session_id(&self) -> Option<String> {
        None
    }
    pub(super) async fn close(&self) {}
}
