-- Servers registered at runtime over the REST API (src/store/).
-- `entry` is the server's config entry as registered (JSON without `name`):
-- plain JSON when `format` = 0, or nonce || XChaCha20-Poly1305 ciphertext
-- when `format` = 1 (store.encryption_key). Every write also sends
-- NOTIFY mcp_discovery_servers in its transaction, for the other replicas.
CREATE TABLE mcp_discovery_servers (
    name        TEXT        NOT NULL PRIMARY KEY,
    format      SMALLINT    NOT NULL,
    entry       BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    revision    BIGINT      NOT NULL
);

-- Facts about the store itself; `key_check` proves which encryption key
-- the entries were written with, so a wrong key is reported at connect.
CREATE TABLE mcp_discovery_store_meta (
    key    TEXT  NOT NULL PRIMARY KEY,
    value  BYTEA NOT NULL
);
