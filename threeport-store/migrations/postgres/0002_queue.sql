-- The durable notification queue of the SQL bus (used when no NATS is configured): a
-- notification stays here until a controller acks its reconcile, so a crash or a stop loses
-- none. Deadlines are on the database clock, so every process agrees on them.
CREATE TABLE IF NOT EXISTS threeport_queue (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    object_id UUID NOT NULL,
    operation TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- Deliverable from then: publish time, requeue deadline, or a delivery's ack deadline.
    visible_at TIMESTAMPTZ NOT NULL,
    -- When the row last became due (reported with a delivery, for queue latency).
    due_at TIMESTAMPTZ NOT NULL,
    -- Deliveries since the last publish or requeue; 0: not delivered, so new notifications
    -- for the object fold into this row.
    attempt INT NOT NULL DEFAULT 0,
    -- Bumped by every delivery and requeue: a settle call presents the token it was given.
    token BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS threeport_queue_visible ON threeport_queue (kind, visible_at);
CREATE INDEX IF NOT EXISTS threeport_queue_object ON threeport_queue (kind, object_id);
