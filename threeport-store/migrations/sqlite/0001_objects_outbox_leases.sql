-- threeport schema v1 for SQLite, the embedded default. Ids are 16-byte BLOBs (they sort like
-- UUIDs), timestamps RFC 3339 text, JSON as text; lease and claim deadlines are integer
-- microseconds since the Unix epoch.

CREATE TABLE IF NOT EXISTS threeport_objects (
    id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deletion_scheduled_at TEXT,
    labels TEXT NOT NULL,
    refs TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    fence INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX IF NOT EXISTS threeport_objects_kind_name ON threeport_objects (kind, name);
CREATE INDEX IF NOT EXISTS threeport_objects_kind_id ON threeport_objects (kind, id);

-- One row per reference, so reference filters and the deletion check use an index.
CREATE TABLE IF NOT EXISTS threeport_refs (
    from_id BLOB NOT NULL REFERENCES threeport_objects (id) ON DELETE CASCADE,
    field TEXT NOT NULL,
    to_id BLOB NOT NULL,
    PRIMARY KEY (to_id, field, from_id)
);
CREATE INDEX IF NOT EXISTS threeport_refs_from ON threeport_refs (from_id);

CREATE TABLE IF NOT EXISTS threeport_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    object_id BLOB NOT NULL,
    operation TEXT NOT NULL,
    version INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_until_us INTEGER
);

CREATE TABLE IF NOT EXISTS threeport_leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS threeport_lease_tokens (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT OR IGNORE INTO threeport_lease_tokens (id, last) VALUES (1, 0);
