-- Owners (fixed at creation) and the relations controllers follow.

ALTER TABLE threeport_objects ADD COLUMN owners TEXT NOT NULL DEFAULT '[]';

-- Owner → dependents, for cascading deletion and "still owns objects" checks.
CREATE TABLE IF NOT EXISTS threeport_owners (
    owner_id BLOB NOT NULL,
    dependent_id BLOB NOT NULL REFERENCES threeport_objects (id) ON DELETE CASCADE,
    dependent_kind TEXT NOT NULL,
    PRIMARY KEY (owner_id, dependent_id)
);
CREATE INDEX IF NOT EXISTS threeport_owners_dependent ON threeport_owners (dependent_id);

-- Kinds that follow other kinds: every write of a followed object notifies, in its
-- transaction, the follower objects the relation maps it to.
CREATE TABLE IF NOT EXISTS threeport_relations (
    followed TEXT NOT NULL,
    follower TEXT NOT NULL,
    via TEXT NOT NULL,
    PRIMARY KEY (followed, follower, via)
);
