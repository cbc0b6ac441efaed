-- Servers registered at runtime over the REST API (src/store/).
-- `entry` is the server's config entry as registered (JSON without `name`):
-- plain JSON when `format` = 0, or nonce || XChaCha20-Poly1305 ciphertext
-- when `format` = 1 (store.encryption_key). Timestamps are RFC 3339 UTC.
CREATE TABLE mcp_discovery_servers (
    name        TEXT    NOT NULL PRIMARY KEY,
    format      INTEGER NOT NULL,
    entry       BLOB    NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    revision    INTEGER NOT NULL
);

-- Facts about the store itself; `key_check` proves which encryption key
-- the entries were written with, so a wrong key is reported at connect.
CREATE TABLE mcp_discovery_store_meta (
    key    TEXT NOT NULL PRIMARY KEY,
    value  BLOB NOT NULL
);
