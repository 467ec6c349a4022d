-- Idempotency keys of creates (Store::create_all_once): the key, what identifies the request
-- that used it first, the objects it created (JSON), and when (microseconds since the Unix
-- epoch). Written in the transaction that creates the objects; kept for a day.
CREATE TABLE IF NOT EXISTS threeport_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    objects TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS threeport_idempotency_created ON threeport_idempotency (created_us);
