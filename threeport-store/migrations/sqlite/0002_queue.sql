-- The durable notification queue of the SQL bus (the embedded default's bus): a notification
-- stays here until a controller acks its reconcile, so a crash or a stop loses none.
-- Times are integer microseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS threeport_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    object_id BLOB NOT NULL,
    operation TEXT NOT NULL,
    version INTEGER NOT NULL,
    -- Deliverable from then: publish time, requeue deadline, or a delivery's ack deadline.
    visible_us INTEGER NOT NULL,
    -- When the row last became due (reported with a delivery, for queue latency).
    due_us INTEGER NOT NULL,
    -- Deliveries since the last publish or requeue; 0: not delivered, so new notifications
    -- for the object fold into this row.
    attempt INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every delivery and requeue: a settle call presents the token it was given.
    token INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS threeport_queue_visible ON threeport_queue (kind, visible_us);
CREATE INDEX IF NOT EXISTS threeport_queue_object ON threeport_queue (kind, object_id);
