-- Owners (fixed at creation) and the relations controllers follow.

ALTER TABLE threeport_objects ADD COLUMN IF NOT EXISTS owners JSONB NOT NULL DEFAULT '[]';
-- Dependents of an owner: owners @> '[{"id": ...}]'.
CREATE INDEX IF NOT EXISTS threeport_objects_owners ON threeport_objects USING GIN (owners);

-- Kinds that follow other kinds: every write of a followed object notifies, in its
-- transaction, the follower objects the relation maps it to.
CREATE TABLE IF NOT EXISTS threeport_relations (
    followed TEXT NOT NULL,
    follower TEXT NOT NULL,
    via TEXT NOT NULL,
    PRIMARY KEY (followed, follower, via)
);
