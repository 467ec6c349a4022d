-- Idempotency keys of creates (Store::create_all_once): the key, what identifies the request
-- that used it first, the objects it created, and when. Written in the transaction that
-- creates the objects; kept for a day.
CREATE TABLE IF NOT EXISTS threeport_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    objects JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS threeport_idempotency_created ON threeport_idempotency (created_at);
