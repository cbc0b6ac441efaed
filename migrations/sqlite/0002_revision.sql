-- One write counter for the whole store: every insert, replace and delete
-- takes its next value as the row's revision, so a revision is never reused,
-- not even by a name registered again after a delete. A follower compares a
-- row's revision with the one it runs and ignores older ones; a snapshot
-- carries the counter so that a missing row can be told from one written
-- after the snapshot was taken.
CREATE TABLE mcp_discovery_revision (
    id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    value  INTEGER NOT NULL
);
INSERT INTO mcp_discovery_revision (id, value)
SELECT 1, COALESCE(MAX(revision), 0) FROM mcp_discovery_servers;
