//! Poller. TODO(lead)
