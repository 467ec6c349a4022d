//! [`SqliteStore`]: the embedded default, one file (or memory) and no server.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions (SQLite has one writer at a time; taking the
//! write lock up front avoids upgrade deadlocks), and a busy database is retried. Deadlines of
//! leases and outbox claims use this machine's clock, which every process sharing the file has.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use threeport_core::object::{now, validate_kind};
use threeport_core::relation::status_changed;
use threeport_core::store::IDEMPOTENCY_WINDOW;
use threeport_core::{
    Error, IdempotencyKey, Lease, ListPage, ListQuery, Locker, NewObject, ObjectId, ObjectRef,
    Once, Operation, Outbox, OutboxEntry, Propagation, RawObject, Reference, Relation, Result,
    SpecUpdate, Status, StatusWrite, Store, Via,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::ConnectOptions;
use crate::sql::{
    self, ObjectRow, OpResult, OutboxRow, RowState, as_i64, as_u64, micros, operation_name,
    with_retry,
};

macro_rules! columns {
    () => {
        "id, kind, name, version, generation, created_at, updated_at, deletion_scheduled_at, \
         labels, refs, owners, spec, status"
    };
}

/// Takes SQLite's write lock at the start of the transaction.
const BEGIN: &str = "BEGIN IMMEDIATE";

/// Store, outbox and locker in a SQLite database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    outbox_wake: Arc<Notify>,
}

impl SqliteStore {
    /// Opens (creating if missing) `sqlite://path/to/file.db` or `sqlite::memory:`, and applies
    /// the embedded migrations.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", format!("malformed SQLite URL: {e}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let connect = if in_memory {
            connect
        } else {
            connect.journal_mode(SqliteJournalMode::Wal)
        };
        // Each connection to ":memory:" is a database of its own: keep exactly one, forever.
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(options.max_connections)
        };
        let pool = pool
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| Error::unavailable(format!("cannot open SQLite database {url}: {e}")))?;
        let migrator = sqlx::migrate!("migrations/sqlite");
        migrator
            .run(&pool)
            .await
            .map_err(|err| crate::migrate_error(err, &migrator))?;
        Ok(SqliteStore {
            pool,
            outbox_wake: Arc::new(Notify::new()),
        })
    }

    /// The connection pool, for diagnostics and tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn unix_micros(at: SystemTime) -> i64 {
    micros(at.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// Inserts one new object with its references and creation notification, inside `conn`'s
/// transaction. References may point at objects inserted earlier in the same transaction.
async fn insert(conn: &mut SqliteConnection, id: ObjectId, new: &NewObject) -> OpResult<RawObject> {
    check_references(conn, &new.references).await?;
    let owner_ids: Vec<ObjectId> = new.owners.iter().map(|o| o.id).collect();
    let found = kinds_of(conn, &owner_ids).await?;
    sql::check_owners(id, &new.owners, &found)?;
    let taken = sqlx::query("SELECT 1 FROM threeport_objects WHERE id = ?")
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
    if taken.is_some() {
        return Err(Error::invalid("ids", format!("id {id} is taken")).into());
    }
    let at = now();
    let row = sqlx::query_as::<_, ObjectRow>(concat!(
        "INSERT INTO threeport_objects (id, kind, name, version, generation, created_at, \
         updated_at, labels, refs, owners, spec, status) VALUES (?, ?, ?, 1, 1, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (kind, name) DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(id.0)
    .bind(&new.kind)
    .bind(&new.name)
    .bind(at)
    .bind(at)
    .bind(Json(&new.labels))
    .bind(Json(&new.references))
    .bind(Json(&new.owners))
    .bind(Json(&new.spec))
    .bind(Json(Status::<Value>::default()))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Err(Error::AlreadyExists {
            kind: new.kind.clone(),
            name: new.name.clone(),
        }
        .into());
    };
    let raw = RawObject::from(row);
    write_references(conn, id, &new.references).await?;
    for owner in &new.owners {
        sqlx::query(
            "INSERT INTO threeport_owners (owner_id, dependent_id, dependent_kind) VALUES (?, ?, ?)",
        )
        .bind(owner.id.0)
        .bind(id.0)
        .bind(&new.kind)
        .execute(&mut *conn)
        .await?;
    }
    record(conn, &raw, Operation::Created).await?;
    follow(conn, &raw, false).await?;
    Ok(raw)
}

/// The kind of each of `ids` found, and whether it is being deleted.
async fn kinds_of(
    conn: &mut SqliteConnection,
    ids: &[ObjectId],
) -> OpResult<HashMap<Uuid, (String, bool)>> {
    let mut found = HashMap::new();
    for id in ids {
        let row = sqlx::query(
            "SELECT kind, deletion_scheduled_at IS NOT NULL AS deleting FROM threeport_objects WHERE id = ?",
        )
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            found.insert(id.0, (row.try_get("kind")?, row.try_get("deleting")?));
        }
    }
    Ok(found)
}

async fn check_references(conn: &mut SqliteConnection, references: &[Reference]) -> OpResult<()> {
    let ids: Vec<ObjectId> = references.iter().map(|r| r.id).collect();
    let found = kinds_of(conn, &ids).await?;
    Ok(sql::check_references(references, &found)?)
}

/// The objects whose references point at `id`.
async fn referrers(conn: &mut SqliteConnection, id: ObjectId) -> OpResult<Vec<ObjectRef>> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT DISTINCT o.kind, o.id FROM threeport_refs r JOIN threeport_objects o ON o.id = r.from_id \
         WHERE r.to_id = ? ORDER BY o.id",
    )
    .bind(id.0)
    .fetch_all(&mut *conn)
    .await?;
    Ok(sql::object_refs(rows))
}

/// The objects `id` owns directly, in id order.
async fn dependents_of(conn: &mut SqliteConnection, id: ObjectId) -> OpResult<Vec<ObjectRef>> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT dependent_kind, dependent_id FROM threeport_owners WHERE owner_id = ? \
         ORDER BY dependent_id",
    )
    .bind(id.0)
    .fetch_all(&mut *conn)
    .await?;
    Ok(sql::object_refs(rows))
}

/// Notifies, in `conn`'s transaction, the objects that follow `changed` through a registered
/// relation, and with `owners` its owners too (a removal wakes an owner waiting for it).
async fn follow(conn: &mut SqliteConnection, changed: &RawObject, owners: bool) -> OpResult<()> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT follower, via FROM threeport_relations WHERE followed = ?")
            .bind(&changed.meta.kind)
            .fetch_all(&mut *conn)
            .await?;
    let relations = rows
        .into_iter()
        .map(|(follower, via)| {
            Ok(Relation::new(
                follower,
                changed.meta.kind.clone(),
                Via::parse(&via)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let referrers = if relations.iter().any(|r| r.via == Via::Referencing) {
        referrers(conn, changed.meta.id).await?
    } else {
        Vec::new()
    };
    let mut targets: std::collections::BTreeSet<ObjectRef> = std::collections::BTreeSet::new();
    if owners {
        targets.extend(changed.meta.owners.iter().cloned());
    }
    for relation in &relations {
        targets.extend(relation.targets(changed, &referrers));
        if let Some(notification) = relation.followed_notification(changed) {
            sqlx::query(
                "INSERT INTO threeport_outbox (kind, object_id, operation, version) VALUES (?, ?, 'followed', ?)",
            )
            .bind(&notification.kind)
            .bind(notification.id.0)
            .bind(as_i64(notification.version)?)
            .execute(&mut *conn)
            .await?;
        }
    }
    for target in targets {
        sqlx::query(
            "INSERT INTO threeport_outbox (kind, object_id, operation, version) \
             SELECT kind, id, 'related', version FROM threeport_objects WHERE id = ? AND kind = ?",
        )
        .bind(target.id.0)
        .bind(&target.kind)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn write_references(
    conn: &mut SqliteConnection,
    from: ObjectId,
    references: &[Reference],
) -> OpResult<()> {
    sqlx::query("DELETE FROM threeport_refs WHERE from_id = ?")
        .bind(from.0)
        .execute(&mut *conn)
        .await?;
    for r in references {
        sqlx::query(
            "INSERT OR IGNORE INTO threeport_refs (from_id, field, to_id) VALUES (?, ?, ?)",
        )
        .bind(from.0)
        .bind(&r.field)
        .bind(r.id.0)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn record(
    conn: &mut SqliteConnection,
    raw: &RawObject,
    operation: Operation,
) -> OpResult<()> {
    sqlx::query(
        "INSERT INTO threeport_outbox (kind, object_id, operation, version) VALUES (?, ?, ?, ?)",
    )
    .bind(&raw.meta.kind)
    .bind(raw.meta.id.0)
    .bind(operation_name(operation))
    .bind(as_i64(raw.meta.version)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn row_state(
    conn: &mut SqliteConnection,
    kind: &str,
    id: ObjectId,
) -> OpResult<Option<RowState>> {
    let row = sqlx::query(
        "SELECT version, fence, deletion_scheduled_at IS NOT NULL AS deleting \
         FROM threeport_objects WHERE kind = ? AND id = ?",
    )
    .bind(kind)
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(row) => Some(RowState {
            version: as_u64(row.try_get("version")?),
            fence: as_u64(row.try_get("fence")?),
            deleting: row.try_get("deleting")?,
        }),
        None => None,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, new: NewObject) -> Result<RawObject> {
        let mut created = self.create_all(vec![(ObjectId::new(), new)]).await?;
        Ok(created.pop().expect("one object created"))
    }

    async fn create_all(&self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>> {
        for (_, new) in &objects {
            new.validate()?;
        }
        let created = with_retry("create", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let mut created = Vec::with_capacity(objects.len());
            for (id, new) in &objects {
                created.push(insert(&mut tx, *id, new).await?);
            }
            tx.commit().await?;
            Ok(created)
        })
        .await?;
        self.outbox_wake.notify_one();
        Ok(created)
    }

    async fn create_all_once(
        &self,
        key: &IdempotencyKey,
        objects: Vec<(ObjectId, NewObject)>,
    ) -> Result<Once> {
        key.validate()?;
        for (_, new) in &objects {
            new.validate()?;
        }
        let once = with_retry("create", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let now = SystemTime::now();
            let window_start = unix_micros(now - IDEMPOTENCY_WINDOW);
            sqlx::query("DELETE FROM threeport_idempotency WHERE created_us < ?")
                .bind(window_start)
                .execute(&mut *tx)
                .await?;
            let recorded: Option<(String, String)> = sqlx::query_as(
                "SELECT fingerprint, objects FROM threeport_idempotency WHERE key = ?",
            )
            .bind(&key.key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((fingerprint, objects)) = recorded {
                let objects = serde_json::from_str(&objects).map_err(Error::backend)?;
                return Ok(Once::Replayed {
                    fingerprint,
                    objects,
                });
            }
            let mut created = Vec::with_capacity(objects.len());
            for (id, new) in &objects {
                created.push(insert(&mut tx, *id, new).await?);
            }
            sqlx::query(
                "INSERT INTO threeport_idempotency (key, fingerprint, objects, created_us) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(&key.key)
            .bind(&key.fingerprint)
            .bind(Json(&created))
            .bind(unix_micros(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Once::Created(created))
        })
        .await?;
        if matches!(once, Once::Created(_)) {
            self.outbox_wake.notify_one();
        }
        Ok(once)
    }

    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject> {
        with_retry("get", || async {
            let row = sqlx::query_as::<_, ObjectRow>(concat!(
                "SELECT ",
                columns!(),
                " FROM threeport_objects WHERE kind = ? AND id = ?"
            ))
            .bind(kind)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(row) => Ok(row.into()),
                None => Err(Error::not_found(kind, id).into()),
            }
        })
        .await
    }

    async fn list(&self, kind: &str, query: &ListQuery) -> Result<ListPage> {
        validate_kind(kind)?;
        query.validate()?;
        let limit = i64::try_from(query.limit + 1).unwrap_or(i64::MAX);
        let rows = with_retry("list", || async {
            let mut sql = QueryBuilder::<Sqlite>::new(concat!("SELECT ", columns!(), " FROM threeport_objects WHERE kind = "));
            sql.push_bind(kind);
            if let Some(after) = query.after {
                sql.push(" AND id > ").push_bind(after.0);
            }
            if let Some(name) = &query.name {
                sql.push(" AND name = ").push_bind(name);
            }
            for (key, value) in &query.labels {
                sql.push(" AND EXISTS (SELECT 1 FROM json_each(threeport_objects.labels) WHERE json_each.key = ")
                    .push_bind(key)
                    .push(" AND json_each.value = ")
                    .push_bind(value)
                    .push(")");
            }
            for (field, id) in &query.references {
                sql.push(" AND id IN (SELECT from_id FROM threeport_refs WHERE to_id = ")
                    .push_bind(id.0)
                    .push(" AND field = ")
                    .push_bind(field)
                    .push(")");
            }
            sql.push(" ORDER BY id LIMIT ").push_bind(limit);
            Ok(sql.build_query_as::<ObjectRow>().fetch_all(&self.pool).await?)
        })
        .await?;
        let items: Vec<RawObject> = rows.into_iter().map(RawObject::from).collect();
        Ok(ListPage::from_overfetch(items, query.limit, |o| o.meta.id))
    }

    async fn update(&self, kind: &str, id: ObjectId, update: SpecUpdate) -> Result<RawObject> {
        update.validate(id)?;
        let raw = with_retry("update", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let state = row_state(&mut tx, kind, id).await?;
            if state.is_none_or(|s| s.deleting || update.expected_version.is_some_and(|v| v != s.version)) {
                return Err(sql::explain_miss(kind, id, state, update.expected_version, None).into());
            }
            check_references(&mut tx, &update.references).await?;
            let row = sqlx::query_as::<_, ObjectRow>(concat!(
                "UPDATE threeport_objects SET spec = ?, labels = ?, refs = ?, version = version + 1, \
                 generation = generation + 1, updated_at = ? WHERE id = ? RETURNING ",
                columns!()
            ))
            .bind(Json(&update.spec))
            .bind(Json(&update.labels))
            .bind(Json(&update.references))
            .bind(now())
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let raw = RawObject::from(row);
            write_references(&mut tx, id, &update.references).await?;
            record(&mut tx, &raw, Operation::Updated).await?;
            follow(&mut tx, &raw, false).await?;
            tx.commit().await?;
            Ok(raw)
        })
        .await?;
        self.outbox_wake.notify_one();
        Ok(raw)
    }

    async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> Result<RawObject> {
        let expected = write.expected_version.map(as_i64).transpose()?;
        let fence = write.fence.map(as_i64).transpose()?;
        let (raw, changed) = with_retry("update_status", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let before: Option<Json<Status<Value>>> =
                sqlx::query_scalar("SELECT status FROM threeport_objects WHERE kind = ? AND id = ?")
                    .bind(kind)
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            let row = sqlx::query_as::<_, ObjectRow>(concat!(
                "UPDATE threeport_objects SET status = ?1, version = version + 1, updated_at = ?2, \
                 fence = MAX(fence, COALESCE(?5, fence)) \
                 WHERE kind = ?3 AND id = ?4 AND (?6 IS NULL OR version = ?6) AND (?5 IS NULL OR fence <= ?5) \
                 RETURNING ",
                columns!()
            ))
            .bind(Json(&write.status))
            .bind(now())
            .bind(kind)
            .bind(id.0)
            .bind(fence)
            .bind(expected)
            .fetch_optional(&mut *tx)
            .await?;
            let raw = match row {
                Some(row) => RawObject::from(row),
                None => {
                    let state = row_state(&mut tx, kind, id).await?;
                    return Err(sql::explain_miss(kind, id, state, write.expected_version, write.fence).into());
                }
            };
            let changed = before.is_some_and(|b| status_changed(&b.0, &raw.status));
            if changed {
                follow(&mut tx, &raw, false).await?;
            }
            tx.commit().await?;
            Ok((raw, changed))
        })
        .await?;
        if changed {
            self.outbox_wake.notify_one();
        }
        Ok(raw)
    }

    async fn schedule_deletion_with(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
        propagation: Propagation,
    ) -> Result<RawObject> {
        let (raw, changed) = with_retry("schedule_deletion", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let row = sqlx::query_as::<_, ObjectRow>(concat!("SELECT ", columns!(), " FROM threeport_objects WHERE kind = ? AND id = ?"))
                .bind(kind)
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(Error::not_found(kind, id).into());
            };
            let current = RawObject::from(row);
            if let Some(expected) = expected_version.filter(|v| *v != current.meta.version) {
                return Err(Error::conflict(format!(
                    "{kind} {id} is at version {}, not {expected}",
                    current.meta.version
                ))
                .into());
            }
            if current.meta.deletion_scheduled_at.is_some() {
                return Ok((current, false));
            }
            // The cascade: the object and, in the foreground, everything it owns.
            let cascade = sql::deletion_cascade(
                &mut *tx,
                kind,
                id,
                propagation,
                dependents_of,
                referrers,
            )
            .await?;
            let at = now();
            if propagation == Propagation::Orphan {
                for dependent in dependents_of(&mut tx, id).await? {
                    let owners: Json<Vec<ObjectRef>> =
                        sqlx::query_scalar("SELECT owners FROM threeport_objects WHERE id = ?")
                            .bind(dependent.id.0)
                            .fetch_one(&mut *tx)
                            .await?;
                    let kept: Vec<ObjectRef> = owners.0.into_iter().filter(|o| o.id != id).collect();
                    sqlx::query("UPDATE threeport_objects SET owners = ?, version = version + 1, updated_at = ? WHERE id = ?")
                        .bind(Json(&kept))
                        .bind(at)
                        .bind(dependent.id.0)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("DELETE FROM threeport_owners WHERE owner_id = ?")
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut root = None;
            for member in &cascade {
                let row = sqlx::query_as::<_, ObjectRow>(concat!(
                    "UPDATE threeport_objects SET deletion_scheduled_at = ?1, version = version + 1, \
                     generation = generation + 1, updated_at = ?1, \
                     status = json_set(status, '$.state', 'deletion_scheduled') \
                     WHERE id = ?2 AND deletion_scheduled_at IS NULL RETURNING ",
                    columns!()
                ))
                .bind(at)
                .bind(member.id.0)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = row {
                    let raw = RawObject::from(row);
                    record(&mut tx, &raw, Operation::Deleted).await?;
                    follow(&mut tx, &raw, false).await?;
                    root.get_or_insert(raw);
                }
            }
            tx.commit().await?;
            Ok((root.expect("the object itself is scheduled"), true))
        })
        .await?;
        if changed {
            self.outbox_wake.notify_one();
        }
        Ok(raw)
    }

    async fn dependents(&self, kind: &str, id: ObjectId) -> Result<Vec<ObjectRef>> {
        with_retry("dependents", || async {
            let mut conn = self.pool.acquire().await?;
            if row_state(&mut conn, kind, id).await?.is_none() {
                return Err(Error::not_found(kind, id).into());
            }
            dependents_of(&mut conn, id).await
        })
        .await
    }

    async fn register_relations(&self, relations: &[Relation]) -> Result<()> {
        for relation in relations {
            relation.validate()?;
        }
        with_retry("register_relations", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            for relation in relations {
                sqlx::query(
                    "INSERT OR IGNORE INTO threeport_relations (followed, follower, via) VALUES (?, ?, ?)",
                )
                .bind(&relation.followed)
                .bind(&relation.follower)
                .bind(relation.via.as_str())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn remove(&self, kind: &str, id: ObjectId, fence: Option<u64>) -> Result<()> {
        let token = fence.map(as_i64).transpose()?;
        with_retry("remove", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let state = row_state(&mut tx, kind, id).await?;
            if state.is_none_or(|s| token.is_some_and(|t| as_u64(t) < s.fence)) {
                return Err(sql::explain_miss(kind, id, state, None, fence).into());
            }
            if let Some(dependent) = dependents_of(&mut tx, id).await?.first() {
                return Err(sql::still_owns(kind, id, dependent).into());
            }
            let row = sqlx::query_as::<_, ObjectRow>(concat!(
                "DELETE FROM threeport_objects WHERE kind = ?1 AND id = ?2 RETURNING ",
                columns!()
            ))
            .bind(kind)
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let raw = RawObject::from(row);
            follow(&mut tx, &raw, true).await?;
            tx.commit().await?;
            Ok(())
        })
        .await?;
        self.outbox_wake.notify_one();
        Ok(())
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim(
        &self,
        claimer: &str,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<OutboxEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = with_retry("outbox claim", || async {
            let now = SystemTime::now();
            let rows = sqlx::query_as::<_, OutboxRow>(
                "UPDATE threeport_outbox SET claimed_by = ?1, claimed_until_us = ?2 \
                 WHERE seq IN (SELECT seq FROM threeport_outbox \
                   WHERE claimed_until_us IS NULL OR claimed_until_us <= ?3 OR claimed_by = ?1 \
                   ORDER BY seq LIMIT ?4) \
                 RETURNING seq, kind, object_id, operation, version",
            )
            .bind(claimer)
            .bind(unix_micros(now + claim_for))
            .bind(unix_micros(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows)
        })
        .await?;
        sql::outbox_entries(rows)
    }

    async fn complete(&self, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = seqs.iter().map(|s| as_i64(*s)).collect::<Result<_>>()?;
        with_retry("outbox complete", || async {
            let mut sql =
                QueryBuilder::<Sqlite>::new("DELETE FROM threeport_outbox WHERE seq IN (");
            let mut list = sql.separated(", ");
            for seq in &seqs {
                list.push_bind(*seq);
            }
            sql.push(")");
            sql.build().execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    async fn wait_for_entries(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.outbox_wake.notified()).await;
    }
}

#[async_trait]
impl Locker for SqliteStore {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let token = with_retry("lease acquire", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let now = SystemTime::now();
            let held: Option<i64> = sqlx::query_scalar("SELECT expires_at_us FROM threeport_leases WHERE key = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            if held.is_some_and(|expires| expires > unix_micros(now)) {
                return Ok(None);
            }
            let token: i64 = sqlx::query_scalar("UPDATE threeport_lease_tokens SET last = last + 1 WHERE id = 1 RETURNING last")
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("INSERT OR REPLACE INTO threeport_leases (key, holder, token, expires_at_us) VALUES (?, ?, ?, ?)")
                .bind(key)
                .bind(holder)
                .bind(token)
                .bind(unix_micros(now + ttl))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(token))
        })
        .await?;
        Ok(token.map(|token| Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            token: as_u64(token),
            ttl,
        }))
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        let token = as_i64(lease.token)?;
        let renewed = with_retry("lease renew", || async {
            let now = SystemTime::now();
            let result = sqlx::query(
                "UPDATE threeport_leases SET expires_at_us = ?1 WHERE key = ?2 AND token = ?3 AND expires_at_us > ?4",
            )
            .bind(unix_micros(now + lease.ttl))
            .bind(&lease.key)
            .bind(token)
            .bind(unix_micros(now))
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected() == 1)
        })
        .await?;
        if renewed {
            Ok(lease.clone())
        } else {
            Err(lease.lost())
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let token = as_i64(lease.token)?;
        with_retry("lease release", || async {
            sqlx::query("DELETE FROM threeport_leases WHERE key = ? AND token = ?")
                .bind(&lease.key)
                .bind(token)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }
}
