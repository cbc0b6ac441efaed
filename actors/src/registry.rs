//! Registry actor. TODO(lead)
