-- threeport schema v1. Only SQL that PostgreSQL and CockroachDB both accept: no LISTEN/NOTIFY,
-- no advisory locks, no jsonb_path_ops, SERIAL (a unique_rowid() in CockroachDB) for the outbox.

CREATE TABLE IF NOT EXISTS threeport_objects (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    deletion_scheduled_at TIMESTAMPTZ,
    labels JSONB NOT NULL,
    refs JSONB NOT NULL,
    spec JSONB NOT NULL,
    status JSONB NOT NULL,
    -- Highest lease fencing token a controller write presented.
    fence BIGINT NOT NULL DEFAULT 0
);

-- Names are unique per kind by index, not by a query.
CREATE UNIQUE INDEX IF NOT EXISTS threeport_objects_kind_name ON threeport_objects (kind, name);
-- Cursor pagination: WHERE kind = $1 AND id > $2 ORDER BY id.
CREATE INDEX IF NOT EXISTS threeport_objects_kind_id ON threeport_objects (kind, id);
-- Label and reference filters (labels @> '{...}', refs @> '[{...}]') and the
-- "still referenced" check on deletion.
CREATE INDEX IF NOT EXISTS threeport_objects_labels ON threeport_objects USING GIN (labels);
CREATE INDEX IF NOT EXISTS threeport_objects_refs ON threeport_objects USING GIN (refs);

-- Notifications written in the same transaction as the object change; the relay claims,
-- publishes and deletes them.
CREATE TABLE IF NOT EXISTS threeport_outbox (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    object_id UUID NOT NULL,
    operation TEXT NOT NULL,
    version BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until TIMESTAMPTZ
);

-- Leases; tokens come from a sequence, so they only grow.
CREATE TABLE IF NOT EXISTS threeport_leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS threeport_lease_tokens;
