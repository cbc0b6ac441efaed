//! Raw serde schema (`deny_unknown_fields`), as written in the file.
//! TODO(helper): fill in.
