//! [`PgStore`]: the production backend, on PostgreSQL or CockroachDB.
//!
//! Desired-state writes and their outbox rows go in one statement (a data-modifying CTE) or one
//! transaction; lease deadlines use the database clock, so every replica agrees on expiry.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row, Transaction};
use threeport_core::object::validate_kind;
use threeport_core::store::IDEMPOTENCY_WINDOW;
use threeport_core::{
    Error, IdempotencyKey, Lease, ListPage, ListQuery, Locker, NewObject, ObjectId, ObjectRef,
    Once, Outbox, OutboxEntry, Propagation, RawObject, Reference, Relation, Result, SpecUpdate,
    Status, StatusWrite, Store,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::ConnectOptions;
use crate::sql::{
    self, ObjectRow, OpResult, OutboxRow, RowState, as_i64, as_u64, map_sql_error, micros,
    with_retry,
};

/// The object columns, as [`ObjectRow`] decodes them.
macro_rules! columns {
    () => {
        "id, kind, name, version, generation, created_at, updated_at, deletion_scheduled_at, \
         labels, refs, owners, spec, status"
    };
}

/// `$column @> $value`, with the `$column <> $empty` that lets PostgreSQL use the partial
/// `jsonb_path_ops` index of the column ([`PgStore::index_json_paths`]); on CockroachDB the
/// second condition is redundant and costs nothing.
macro_rules! contains {
    ($column:literal, $value:literal, $empty:literal) => {
        concat!(
            $column, " @> ", $value, " AND ", $column, " <> '", $empty, "'::JSONB"
        )
    };
}

/// The outbox insert that accompanies a write CTE named `written`.
macro_rules! notify {
    ($operation:literal) => {
        concat!(
            "notified AS (INSERT INTO threeport_outbox (kind, object_id, operation, version) \
             SELECT kind, id, '",
            $operation,
            "', version FROM written)"
        )
    };
}

/// Notifies the followers of the rows of a CTE named `written` (`kind, id, refs, owners`),
/// where `$cond` holds: the follower objects each registered relation maps them to, found
/// through the reference index (`referencing`) or by primary key (`referenced_by`, `owning`),
/// and for `mapped` relations the written object itself, for the follower to map.
macro_rules! follow {
    ($cond:literal) => {
        concat!(
            "followed AS (INSERT INTO threeport_outbox (kind, object_id, operation, version) \
             SELECT t.kind, t.id, t.op, max(t.version) FROM ( \
             SELECT o.kind, o.id, 'related' AS op, o.version FROM written w \
             JOIN threeport_relations rel ON rel.followed = w.kind AND rel.via = 'referencing' \
             JOIN threeport_objects o ON o.kind = rel.follower \
             AND ",
            contains!("o.refs", "jsonb_build_array(jsonb_build_object('id', w.id))", "[]"),
            " WHERE ",
            $cond,
            " UNION ALL SELECT o.kind, o.id, 'related', o.version FROM written w \
             JOIN threeport_relations rel ON rel.followed = w.kind AND rel.via = 'referenced_by' \
             CROSS JOIN LATERAL jsonb_array_elements(w.refs) AS e(link) \
             JOIN threeport_objects o ON o.id = (e.link->>'id')::UUID AND o.kind = rel.follower WHERE ",
            $cond,
            " UNION ALL SELECT o.kind, o.id, 'related', o.version FROM written w \
             JOIN threeport_relations rel ON rel.followed = w.kind AND rel.via = 'owning' \
             CROSS JOIN LATERAL jsonb_array_elements(w.owners) AS e(link) \
             JOIN threeport_objects o ON o.id = (e.link->>'id')::UUID AND o.kind = rel.follower WHERE ",
            $cond,
            " UNION ALL SELECT rel.follower, w.id, 'followed', w.version FROM written w \
             JOIN threeport_relations rel ON rel.followed = w.kind AND rel.via = 'mapped' WHERE ",
            $cond,
            ") t GROUP BY t.kind, t.id, t.op)"
        )
    };
}

/// Transactions that check links (references, owners) and deletions run at READ COMMITTED
/// and rely on row locks: a write that links to an object holds it `FOR SHARE` until it
/// commits, a deletion holds every object of its cascade `FOR UPDATE` before it looks for
/// referrers, so each waits for the other and then sees what it committed (a new referrer, or
/// the target being deleted). Serializable isolation here made concurrent creates fail each
/// other: with time-ordered ids they read and write the same last index pages, which
/// PostgreSQL's predicate locks count as conflicts (the scale bench's 16 clients got 503s after
/// ten retries). CockroachDB runs them serializable unless read committed is enabled there;
/// SQLSTATE 40001 is retried either way.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Idempotent creates stay serializable: two requests with one key must see each other's
/// record (the second replays the first), which no row lock can arrange before the record
/// exists.
const BEGIN_SERIALIZABLE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// Store, outbox and locker on PostgreSQL or CockroachDB. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Woken by this process's own writes, so an in-process relay does not wait for its poll.
    outbox_wake: Arc<Notify>,
    /// Connections for the statements that find their rows by key (gets, creates, status
    /// writes, an owner's dependents): their plans are made once and always use an index
    /// ([`keyed_plans`]).
    keyed: PgPool,
    /// Group commit of creates, status writes and reads by id (on `keyed`).
    batches: Arc<batch::Batches>,
}

/// Settings of the `keyed` pool's connections: PostgreSQL plans each statement once per
/// connection (a generic plan: a batch's arrays differ in length every time, so it would
/// otherwise be planned anew on every run, 0.9 ms for the status batch against 0.2 to run
/// it), and that plan looks rows up through an index wherever one serves, as every statement
/// of this pool does. A plan made while the table was still small (a new database, before
/// autovacuum's first look) chose table scans, and kept them as the table grew: a create
/// with an owner then scanned every object to lock its owner (2.5 ms at 7,000 objects).
/// CockroachDB has neither setting (the errors are ignored).
async fn keyed_plans(conn: &mut PgConnection) -> std::result::Result<(), sqlx::Error> {
    for setting in [
        "SET plan_cache_mode = force_generic_plan",
        "SET enable_seqscan = off",
    ] {
        if let Err(err) = sqlx::query(setting).execute(&mut *conn).await {
            tracing::debug!(error = %err, setting, "not a setting of this server");
        }
    }
    Ok(())
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db?sslmode=verify-full&sslrootcert=…`)
    /// and applies the embedded migrations.
    ///
    /// Errors name the problem: a malformed URL (`Invalid`, field `database_url`), an
    /// unreachable server (`Unavailable`), a schema newer than this binary (`Invalid`, field
    /// `database`).
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| {
            Error::invalid("database_url", format!("malformed PostgreSQL URL: {e}"))
        })?;
        let target = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or("(default database)")
        );
        // The configured connections are shared between the two pools.
        let keyed_connections = (options.max_connections / 2).max(2);
        let pool = PgPoolOptions::new()
            .max_connections(
                options
                    .max_connections
                    .saturating_sub(keyed_connections)
                    .max(2),
            )
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(|e| {
                Error::unavailable(format!("cannot connect to PostgreSQL at {target}: {e}"))
            })?;
        let keyed = PgPoolOptions::new()
            .max_connections(keyed_connections)
            .acquire_timeout(options.connect_timeout)
            .after_connect(|conn, _| Box::pin(keyed_plans(conn)))
            .connect_lazy_with(connect);
        let store = PgStore {
            batches: Arc::new(batch::Batches::start(&keyed)),
            keyed,
            pool,
            outbox_wake: Arc::new(Notify::new()),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool, for diagnostics and benchmarks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations; idempotent, and safe with several processes starting
    /// at once (they take turns on a guard row: CockroachDB has no advisory locks).
    pub async fn migrate(&self) -> Result<()> {
        let holder = Uuid::now_v7().to_string();
        self.take_migration_guard(&holder).await?;
        let mut migrator = sqlx::migrate!("migrations/postgres");
        migrator.set_locking(false);
        let mut result = migrator
            .run(&self.pool)
            .await
            .map_err(|err| crate::migrate_error(err, &migrator));
        if result.is_ok() {
            result = self.index_json_paths().await;
        }
        let release =
            sqlx::query("DELETE FROM threeport_migration_guard WHERE id = 1 AND holder = $1")
                .bind(&holder)
                .execute(&self.pool)
                .await;
        if let Err(err) = release {
            tracing::warn!(error = %err, "releasing the migration guard failed; it expires in 5 minutes");
        }
        result
    }

    /// On PostgreSQL (not CockroachDB, whose inverted indexes already key on whole paths),
    /// serves the label, reference and owner filters from partial `jsonb_path_ops` GIN
    /// indexes instead of the migrations' portable ones, which this replaces (done once).
    ///
    /// Why: a portable (`jsonb_ops`) index keys every JSON key and value apart, so every
    /// owned object's row sits under the one key `"id"`, and an `owners @> [{"id": …}]`
    /// lookup and every insert meet at that key's posting tree; objects without labels,
    /// references or owners (most of them) all went under one "empty" entry too. Under the
    /// e2e bench's create load this made a `dependents` lookup cost 0.26 ms and a create with
    /// an owner 0.47 ms of database time. `jsonb_path_ops` keys a path with its value (one
    /// selective key per owner), and empty values stay out of the index. Fast update stays
    /// off: with it, inserts go to a pending list that every containment query scans.
    async fn index_json_paths(&self) -> Result<()> {
        const COLUMNS: [(&str, &str); 3] = [("labels", "{}"), ("refs", "[]"), ("owners", "[]")];
        let index = async {
            let version: String = sqlx::query_scalar("SELECT version()")
                .fetch_one(&self.pool)
                .await?;
            if version.contains("CockroachDB") {
                return Ok(());
            }
            for (column, empty) in COLUMNS {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE INDEX IF NOT EXISTS threeport_objects_{column}_paths \
                     ON threeport_objects USING GIN ({column} jsonb_path_ops) \
                     WITH (fastupdate = off) WHERE {column} <> '{empty}'::JSONB"
                )))
                .execute(&self.pool)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP INDEX IF EXISTS threeport_objects_{column}"
                )))
                .execute(&self.pool)
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        };
        index
            .await
            .map_err(|e| Error::unavailable(format!("indexing the JSON columns: {e}")))
    }

    async fn take_migration_guard(&self, holder: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            // Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog: retried below.
            let created = sqlx::query(
                "CREATE TABLE IF NOT EXISTS threeport_migration_guard \
                 (id INT PRIMARY KEY, holder TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)",
            )
            .execute(&self.pool)
            .await;
            let taken = match created {
                Ok(_) => sqlx::query(
                    "INSERT INTO threeport_migration_guard (id, holder, expires_at) \
                     VALUES (1, $1, now() + INTERVAL '5 minutes') \
                     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE threeport_migration_guard.expires_at < now() RETURNING id",
                )
                .bind(holder)
                .fetch_optional(&self.pool)
                .await
                .map(|row| row.is_some()),
                Err(err) => Err(err),
            };
            match taken {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(sqlx::Error::Database(db))
                    if matches!(
                        db.code().as_deref(),
                        Some("23505" | "42P07" | "42710" | "40001")
                    ) => {}
                Err(err) => return Err(map_sql_error("taking the migration guard", err)),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::unavailable(
                    "another process has been migrating the database for 5 minutes",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn wrote(&self) {
        self.outbox_wake.notify_one();
    }
}

/// The rest of a create statement after the `INSERT … ON CONFLICT DO NOTHING RETURNING`: the
/// creation notification, the followers' notifications and the created row.
macro_rules! created {
    () => {
        concat!(
            columns!(),
            "), ",
            notify!("created"),
            ", ",
            follow!("true"),
            " SELECT ",
            columns!(),
            " FROM written"
        )
    };
}

/// A statement that returns object rows.
type RowsQuery<'q> = sqlx::query::QueryAs<'q, Postgres, ObjectRow, sqlx::postgres::PgArguments>;

/// Inserts a new object and its creation notification in one statement (a CTE); no row
/// back means the name or the id is taken ([`created_or_taken`] says which).
fn insert_query<'q>(
    id: ObjectId,
    new: &'q NewObject,
    status: &'q Json<Status<Value>>,
) -> RowsQuery<'q> {
    const SQL: &str = concat!(
        "WITH written AS (INSERT INTO threeport_objects \
         (id, kind, name, version, generation, created_at, updated_at, labels, refs, owners, spec, status) \
         VALUES ($1, $2, $3, 1, 1, now(), now(), $4, $5, $8, $6, $7) \
         ON CONFLICT DO NOTHING RETURNING ",
        created!()
    );
    bind_new(sqlx::query_as::<_, ObjectRow>(SQL), id, new, status)
}

/// [`insert_query`] for an object with references or owners: locks them (`FOR SHARE`, as
/// [`kinds_of`] does) and inserts only if each exists with the named kind and is not being
/// deleted, in one autocommitted statement. Returns no row when a link fails or the id or
/// name is taken; the caller then finds out which in a transaction.
fn linked_insert_query<'q>(
    id: ObjectId,
    new: &'q NewObject,
    status: &'q Json<Status<Value>>,
    link_ids: &'q [Uuid],
    link_kinds: &'q [String],
) -> RowsQuery<'q> {
    const SQL: &str = concat!(
        "WITH targets AS (SELECT id, kind, deletion_scheduled_at IS NOT NULL AS deleting \
         FROM threeport_objects WHERE id = ANY($9) ORDER BY id FOR SHARE), \
         linked AS (SELECT NOT EXISTS (SELECT 1 FROM unnest($9::UUID[], $10::TEXT[]) AS e(id, kind) \
         LEFT JOIN targets t ON t.id = e.id AND t.kind = e.kind \
         WHERE t.id IS NULL OR t.deleting) AS ok), \
         written AS (INSERT INTO threeport_objects \
         (id, kind, name, version, generation, created_at, updated_at, labels, refs, owners, spec, status) \
         SELECT $1, $2, $3, 1, 1, now(), now(), $4, $5, $8, $6, $7 FROM linked WHERE linked.ok \
         ON CONFLICT DO NOTHING RETURNING ",
        created!()
    );
    bind_new(sqlx::query_as::<_, ObjectRow>(SQL), id, new, status)
        .bind(link_ids)
        .bind(link_kinds)
}

/// Binds a new object's columns as `$1`–`$8` of a create statement.
fn bind_new<'q>(
    query: RowsQuery<'q>,
    id: ObjectId,
    new: &'q NewObject,
    status: &'q Json<Status<Value>>,
) -> RowsQuery<'q> {
    query
        .bind(id.0)
        .bind(&new.kind)
        .bind(&new.name)
        .bind(Json(&new.labels))
        .bind(Json(&new.references))
        .bind(Json(&new.spec))
        .bind(status)
        .bind(Json(&new.owners))
}

/// The created object, or why there was none: its id taken (a client-chosen id), else its
/// name. Looked up only on the failure path, so a create stays one round trip.
async fn created_or_taken<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    row: Option<ObjectRow>,
    id: ObjectId,
    new: &NewObject,
) -> OpResult<RawObject> {
    if let Some(row) = row {
        return Ok(row.into());
    }
    let id_taken = sqlx::query("SELECT 1 FROM threeport_objects WHERE id = $1")
        .bind(id.0)
        .fetch_optional(conn)
        .await?
        .is_some();
    if id_taken {
        return Err(Error::invalid("ids", format!("id {id} is taken")).into());
    }
    Err(Error::AlreadyExists {
        kind: new.kind.clone(),
        name: new.name.clone(),
    }
    .into())
}

/// Checks a new object's references and owners (see [`check_references`]).
async fn check_links(
    tx: &mut Transaction<'_, Postgres>,
    id: ObjectId,
    new: &NewObject,
) -> OpResult<()> {
    if !new.references.is_empty() {
        check_references(tx, &new.references).await?;
    }
    if !new.owners.is_empty() {
        let ids: Vec<ObjectId> = new.owners.iter().map(|o| o.id).collect();
        let found = kinds_of(tx, &ids).await?;
        sql::check_owners(id, &new.owners, &found)?;
    }
    Ok(())
}

async fn check_references(
    tx: &mut Transaction<'_, Postgres>,
    references: &[Reference],
) -> OpResult<()> {
    let ids: Vec<ObjectId> = references.iter().map(|r| r.id).collect();
    let found = kinds_of(tx, &ids).await?;
    Ok(sql::check_references(references, &found)?)
}

/// The kind of each of `ids` found, and whether it is being deleted; locked (FOR SHARE).
async fn kinds_of(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[ObjectId],
) -> OpResult<HashMap<Uuid, (String, bool)>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = sqlx::query(
        "SELECT id, kind, deletion_scheduled_at IS NOT NULL AS deleting \
         FROM threeport_objects WHERE id = ANY($1) ORDER BY id FOR SHARE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut found = HashMap::new();
    for row in &rows {
        found.insert(
            row.try_get::<Uuid, _>("id")?,
            (row.try_get("kind")?, row.try_get("deleting")?),
        );
    }
    Ok(found)
}

/// The objects whose references point at `id`.
async fn referrers(conn: &mut PgConnection, id: ObjectId) -> OpResult<Vec<ObjectRef>> {
    const SQL: &str = concat!(
        "SELECT kind, id FROM threeport_objects WHERE ",
        contains!("refs", "$1", "[]"),
        " ORDER BY id"
    );
    linking(&mut *conn, SQL, id).await
}

/// The objects `id` owns directly, in id order.
async fn dependents_of<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: ObjectId,
) -> OpResult<Vec<ObjectRef>> {
    const SQL: &str = concat!(
        "SELECT kind, id FROM threeport_objects WHERE ",
        contains!("owners", "$1", "[]"),
        " ORDER BY id"
    );
    linking(executor, SQL, id).await
}

/// The objects `query` finds linking to `id` (`$1`: `[{"id": id}]`), as kinds and ids.
async fn linking<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    query: &'static str,
    id: ObjectId,
) -> OpResult<Vec<ObjectRef>> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(query)
        .bind(Json(json!([{"id": id}])))
        .fetch_all(executor)
        .await?;
    Ok(sql::object_refs(rows))
}

/// The objects `id` owns directly, in id order, locked `FOR UPDATE` for a deletion's cascade
/// (see [`BEGIN`]).
async fn lock_dependents_of(conn: &mut PgConnection, id: ObjectId) -> OpResult<Vec<ObjectRef>> {
    const SQL: &str = concat!(
        "SELECT kind, id FROM threeport_objects WHERE ",
        contains!("owners", "$1", "[]"),
        " ORDER BY id FOR UPDATE"
    );
    linking(&mut *conn, SQL, id).await
}

/// Why a conditional write matched no row.
async fn explain_miss(
    pool: &PgPool,
    kind: &str,
    id: ObjectId,
    expected: Option<u64>,
    fence: Option<u64>,
) -> OpResult<Error> {
    let state = row_state(pool, kind, id).await?;
    Ok(sql::explain_miss(kind, id, state, expected, fence))
}

/// The facts [`sql::explain_miss`] reads.
async fn row_state(pool: &PgPool, kind: &str, id: ObjectId) -> OpResult<Option<RowState>> {
    let row = sqlx::query(
        "SELECT version, fence, deletion_scheduled_at IS NOT NULL AS deleting \
         FROM threeport_objects WHERE kind = $1 AND id = $2",
    )
    .bind(kind)
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    let state = match row {
        Some(row) => Some(RowState {
            version: as_u64(row.try_get("version")?),
            fence: as_u64(row.try_get("fence")?),
            deleting: row.try_get("deleting")?,
        }),
        None => None,
    };
    Ok(state)
}

mod batch;
pub use batch::batched_writes;

/// A create without references or owners, on its own: one autocommitted statement (see
/// [`batch`] for several at once).
async fn create_plain(pool: &PgPool, id: ObjectId, new: &NewObject) -> Result<RawObject> {
    let status = Json(Status::<Value>::default());
    with_retry("create", || async {
        let row = insert_query(id, new, &status).fetch_optional(pool).await?;
        created_or_taken(pool, row, id, new).await
    })
    .await
}

/// A create with references or owners, on its own (see [`batch`] for several at once).
async fn create_linked(pool: &PgPool, id: ObjectId, new: &NewObject) -> Result<RawObject> {
    let status = Json(Status::<Value>::default());
    let (link_ids, link_kinds): (Vec<Uuid>, Vec<String>) = links_of(new).unzip();
    with_retry("create", || async {
        // Links checked, locked and the row inserted in one round trip when all is well (a
        // transaction took four).
        let linked = linked_insert_query(id, new, &status, &link_ids, &link_kinds)
            .fetch_optional(pool)
            .await?;
        if let Some(row) = linked {
            return Ok(row.into());
        }
        // A link failed, or the id or name is taken: the transaction says which.
        let mut tx = pool.begin_with(BEGIN).await?;
        check_links(&mut tx, id, new).await?;
        let row = insert_query(id, new, &status)
            .fetch_optional(&mut *tx)
            .await?;
        let created = created_or_taken(&mut *tx, row, id, new).await?;
        tx.commit().await?;
        Ok(created)
    })
    .await
}

/// The objects a new object links to (references, then owners): id and kind.
fn links_of(new: &NewObject) -> impl Iterator<Item = (Uuid, String)> + '_ {
    new.references
        .iter()
        .map(|r| (r.id.0, r.kind.clone()))
        .chain(new.owners.iter().map(|o| (o.id.0, o.kind.clone())))
}

/// A status write on its own (see [`batch`] for several at once).
async fn update_status_alone(
    pool: &PgPool,
    kind: &str,
    id: ObjectId,
    write: &StatusWrite,
) -> Result<RawObject> {
    let expected = write.expected_version.map(as_i64).transpose()?;
    let fence = write.fence.map(as_i64).transpose()?;
    // `before` reads the row as it was before this statement: a change of state,
    // conditions or details notifies the followers.
    const SQL: &str = concat!(
        "WITH before AS (SELECT status FROM threeport_objects WHERE kind = $1 AND id = $2), \
         written AS (UPDATE threeport_objects SET status = $3, version = version + 1, updated_at = now(), \
         fence = GREATEST(fence, COALESCE($5::BIGINT, fence)) \
         WHERE kind = $1 AND id = $2 AND ($4::BIGINT IS NULL OR version = $4) \
         AND ($5::BIGINT IS NULL OR fence <= $5) RETURNING ",
        columns!(),
        "), ",
        follow!(
            "EXISTS (SELECT 1 FROM before b WHERE \
             b.status->'state' IS DISTINCT FROM w.status->'state' \
             OR b.status->'conditions' IS DISTINCT FROM w.status->'conditions' \
             OR b.status->'details' IS DISTINCT FROM w.status->'details')"
        ),
        " SELECT ",
        columns!(),
        " FROM written"
    );
    with_retry("update_status", || async {
        let row = sqlx::query_as::<_, ObjectRow>(SQL)
            .bind(kind)
            .bind(id.0)
            .bind(Json(&write.status))
            .bind(expected)
            .bind(fence)
            .fetch_optional(pool)
            .await?;
        match row {
            Some(row) => Ok(row.into()),
            None => Err(
                explain_miss(pool, kind, id, write.expected_version, write.fence)
                    .await?
                    .into(),
            ),
        }
    })
    .await
}

/// Reads one object on its own (see [`batch`] for several at once).
async fn get_alone(pool: &PgPool, kind: &str, id: ObjectId) -> Result<RawObject> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM threeport_objects WHERE kind = $1 AND id = $2"
    );
    with_retry("get", || async {
        match sqlx::query_as::<_, ObjectRow>(SQL)
            .bind(kind)
            .bind(id.0)
            .fetch_optional(pool)
            .await?
        {
            Some(row) => Ok(row.into()),
            None => Err(Error::not_found(kind, id).into()),
        }
    })
    .await
}

#[async_trait]
impl Store for PgStore {
    async fn create(&self, new: NewObject) -> Result<RawObject> {
        new.validate()?;
        // One autocommitted statement, shared with the other creates waiting at the time.
        let raw = self.batches.create(ObjectId::new(), new).await?;
        self.wrote();
        Ok(raw)
    }

    async fn create_all(&self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>> {
        for (_, new) in &objects {
            new.validate()?;
        }
        // One object without links (a plain POST): as `create`.
        if let [(_, new)] = objects.as_slice()
            && new.references.is_empty()
            && new.owners.is_empty()
        {
            let (id, new) = objects.into_iter().next().expect("one object");
            let raw = self.batches.create(id, new).await?;
            self.wrote();
            return Ok(vec![raw]);
        }
        let status = Json(Status::<Value>::default());
        let created = with_retry("create", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let mut created = Vec::with_capacity(objects.len());
            for (id, new) in &objects {
                check_links(&mut tx, *id, new).await?;
                let row = insert_query(*id, new, &status)
                    .fetch_optional(&mut *tx)
                    .await?;
                created.push(created_or_taken(&mut *tx, row, *id, new).await?);
            }
            tx.commit().await?;
            Ok(created)
        })
        .await?;
        self.wrote();
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
        // Expired keys go now and then, outside the create's transaction (a delete in every
        // serializable transaction would make them conflict).
        if fastrand::u8(..) == 0 {
            let purged = sqlx::query(
                "DELETE FROM threeport_idempotency WHERE created_at < now() - $1::BIGINT * INTERVAL '1 microsecond'",
            )
            .bind(micros(IDEMPOTENCY_WINDOW))
            .execute(&self.pool)
            .await;
            if let Err(err) = purged {
                tracing::debug!(error = %err, "purging expired idempotency keys failed");
            }
        }
        let status = Json(Status::<Value>::default());
        let once = with_retry("create", || async {
            let mut tx = self.pool.begin_with(BEGIN_SERIALIZABLE).await?;
            let recorded: Option<(String, Json<Vec<RawObject>>)> = sqlx::query_as(
                "SELECT fingerprint, objects FROM threeport_idempotency WHERE key = $1 \
                 AND created_at >= now() - $2::BIGINT * INTERVAL '1 microsecond'",
            )
            .bind(&key.key)
            .bind(micros(IDEMPOTENCY_WINDOW))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((fingerprint, Json(objects))) = recorded {
                return Ok(Once::Replayed {
                    fingerprint,
                    objects,
                });
            }
            let mut created = Vec::with_capacity(objects.len());
            for (id, new) in &objects {
                check_links(&mut tx, *id, new).await?;
                let row = insert_query(*id, new, &status)
                    .fetch_optional(&mut *tx)
                    .await?;
                created.push(created_or_taken(&mut *tx, row, *id, new).await?);
            }
            // An expired record of the key is replaced; a live one (a concurrent request that
            // committed first) leaves this transaction to fail and be retried, then replayed.
            sqlx::query(
                "INSERT INTO threeport_idempotency (key, fingerprint, objects, created_at) \
                 VALUES ($1, $2, $3, now()) ON CONFLICT (key) DO UPDATE SET \
                 fingerprint = excluded.fingerprint, objects = excluded.objects, \
                 created_at = excluded.created_at",
            )
            .bind(&key.key)
            .bind(&key.fingerprint)
            .bind(Json(&created))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Once::Created(created))
        })
        .await?;
        if matches!(once, Once::Created(_)) {
            self.wrote();
        }
        Ok(once)
    }

    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject> {
        self.batches.get(kind, id).await
    }

    async fn list(&self, kind: &str, query: &ListQuery) -> Result<ListPage> {
        validate_kind(kind)?;
        query.validate()?;
        let refs: Vec<Value> = query
            .references
            .iter()
            .map(|(field, id)| json!({"field": field, "id": id}))
            .collect();
        let limit = i64::try_from(query.limit + 1).unwrap_or(i64::MAX);
        let rows = with_retry("list", || async {
            let mut sql = QueryBuilder::<Postgres>::new(concat!(
                "SELECT ",
                columns!(),
                " FROM threeport_objects WHERE kind = "
            ));
            sql.push_bind(kind);
            if let Some(after) = query.after {
                sql.push(" AND id > ").push_bind(after.0);
            }
            if let Some(name) = &query.name {
                sql.push(" AND name = ").push_bind(name);
            }
            if !query.labels.is_empty() {
                sql.push(" AND labels <> '{}'::JSONB AND labels @> ")
                    .push_bind(Json(&query.labels));
            }
            if !refs.is_empty() {
                sql.push(" AND refs <> '[]'::JSONB AND refs @> ")
                    .push_bind(Json(&refs));
            }
            sql.push(" ORDER BY id LIMIT ").push_bind(limit);
            Ok(sql
                .build_query_as::<ObjectRow>()
                .fetch_all(&self.pool)
                .await?)
        })
        .await?;
        let items: Vec<RawObject> = rows.into_iter().map(RawObject::from).collect();
        Ok(ListPage::from_overfetch(items, query.limit, |o| o.meta.id))
    }

    async fn update(&self, kind: &str, id: ObjectId, update: SpecUpdate) -> Result<RawObject> {
        update.validate(id)?;
        let expected = update.expected_version.map(as_i64).transpose()?;
        const SQL: &str = concat!(
            "WITH written AS (UPDATE threeport_objects SET spec = $3, labels = $4, refs = $5, \
             version = version + 1, generation = generation + 1, updated_at = now() \
             WHERE kind = $1 AND id = $2 AND ($6::BIGINT IS NULL OR version = $6) \
             AND deletion_scheduled_at IS NULL RETURNING ",
            columns!(),
            "), ",
            notify!("updated"),
            ", ",
            follow!("true"),
            " SELECT ",
            columns!(),
            " FROM written"
        );
        let raw = with_retry("update", || async {
            let query = sqlx::query_as::<_, ObjectRow>(SQL)
                .bind(kind)
                .bind(id.0)
                .bind(Json(&update.spec))
                .bind(Json(&update.labels))
                .bind(Json(&update.references))
                .bind(expected);
            let row = if update.references.is_empty() {
                query.fetch_optional(&self.pool).await?
            } else {
                let mut tx = self.pool.begin_with(BEGIN).await?;
                check_references(&mut tx, &update.references).await?;
                let row = query.fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row
            };
            match row {
                Some(row) => Ok(row.into()),
                None => Err(
                    explain_miss(&self.pool, kind, id, update.expected_version, None)
                        .await?
                        .into(),
                ),
            }
        })
        .await?;
        self.wrote();
        Ok(raw)
    }

    async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> Result<RawObject> {
        self.batches.update_status(kind, id, write).await
    }

    async fn schedule_deletion_with(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
        propagation: Propagation,
    ) -> Result<RawObject> {
        const SELECT: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM threeport_objects WHERE kind = $1 AND id = $2 FOR UPDATE"
        );
        const SQL: &str = concat!(
            "WITH written AS (UPDATE threeport_objects SET deletion_scheduled_at = now(), \
             version = version + 1, generation = generation + 1, updated_at = now(), \
             status = jsonb_set(status, '{state}', '\"deletion_scheduled\"') \
             WHERE id = ANY($1) AND deletion_scheduled_at IS NULL RETURNING ",
            columns!(),
            "), ",
            notify!("deleted"),
            ", ",
            follow!("true"),
            " SELECT ",
            columns!(),
            " FROM written"
        );
        let (raw, changed) = with_retry("schedule_deletion", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let Some(row) = sqlx::query_as::<_, ObjectRow>(SELECT)
                .bind(kind)
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?
            else {
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
                async |conn: &mut PgConnection, owner| lock_dependents_of(conn, owner).await,
                referrers,
            )
            .await?;
            if propagation == Propagation::Orphan {
                sqlx::query(concat!(
                    "UPDATE threeport_objects SET version = version + 1, updated_at = now(), \
                     owners = COALESCE((SELECT jsonb_agg(e) FROM jsonb_array_elements(owners) e \
                     WHERE e->>'id' <> $2), '[]'::JSONB) WHERE ",
                    contains!("owners", "$1", "[]")
                ))
                .bind(Json(json!([{"id": id}])))
                .bind(id.0.to_string())
                .execute(&mut *tx)
                .await?;
            }
            let ids: Vec<Uuid> = cascade.iter().map(|m| m.id.0).collect();
            let rows = sqlx::query_as::<_, ObjectRow>(SQL)
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            let root = rows
                .into_iter()
                .map(RawObject::from)
                .find(|raw| raw.meta.id == id)
                .expect("the object itself is scheduled");
            Ok((root, true))
        })
        .await?;
        if changed {
            self.wrote();
        }
        Ok(raw)
    }

    async fn dependents(&self, kind: &str, id: ObjectId) -> Result<Vec<ObjectRef>> {
        // One round trip: no row if the owner is missing, one row of NULLs if it owns nothing.
        with_retry("dependents", || async {
            let rows: Vec<(Option<String>, Option<Uuid>)> = sqlx::query_as(concat!(
                "SELECT d.kind, d.id FROM threeport_objects o LEFT JOIN LATERAL \
                     (SELECT kind, id FROM threeport_objects WHERE ",
                contains!("owners", "$3", "[]"),
                " ORDER BY id) d ON true WHERE o.kind = $1 AND o.id = $2"
            ))
            .bind(kind)
            .bind(id.0)
            .bind(Json(json!([{"id": id}])))
            .fetch_all(&self.keyed)
            .await?;
            if rows.is_empty() {
                return Err(Error::not_found(kind, id).into());
            }
            Ok(sql::object_refs(
                rows.into_iter()
                    .filter_map(|(kind, id)| Some((kind?, id?)))
                    .collect(),
            ))
        })
        .await
    }

    async fn register_relations(&self, relations: &[Relation]) -> Result<()> {
        for relation in relations {
            relation.validate()?;
        }
        let followed: Vec<&str> = relations.iter().map(|r| r.followed.as_str()).collect();
        let followers: Vec<&str> = relations.iter().map(|r| r.follower.as_str()).collect();
        let via: Vec<&str> = relations.iter().map(|r| r.via.as_str()).collect();
        let registered = with_retry("register_relations", || async {
            sqlx::query(
                "INSERT INTO threeport_relations (followed, follower, via) \
                 SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[]) ON CONFLICT DO NOTHING",
            )
            .bind(&followed)
            .bind(&followers)
            .bind(&via)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await;
        self.batches.relations_changed();
        registered
    }

    async fn remove(&self, kind: &str, id: ObjectId, fence: Option<u64>) -> Result<()> {
        // The removed row's followers and owners (an owner being deleted waits for it) are
        // notified in the same statement.
        const SQL: &str = concat!(
            "WITH written AS (DELETE FROM threeport_objects WHERE kind = $1 AND id = $2 \
             AND ($3::BIGINT IS NULL OR fence <= $3) \
             AND NOT EXISTS (SELECT 1 FROM threeport_objects d WHERE ",
            contains!("d.owners", "$4", "[]"),
            ") RETURNING ",
            columns!(),
            "), ",
            follow!("true"),
            ", owners_told AS (INSERT INTO threeport_outbox (kind, object_id, operation, version) \
             SELECT o.kind, o.id, 'related', o.version FROM written w \
             CROSS JOIN LATERAL jsonb_array_elements(w.owners) AS e(link) \
             JOIN threeport_objects o ON o.id = (e.link->>'id')::UUID) \
             SELECT count(*) FROM written"
        );
        let token = fence.map(as_i64).transpose()?;
        with_retry("remove", || async {
            let deleted: i64 = sqlx::query_scalar(SQL)
                .bind(kind)
                .bind(id.0)
                .bind(token)
                .bind(Json(json!([{"id": id}])))
                .fetch_one(&self.pool)
                .await?;
            if deleted == 1 {
                return Ok(());
            }
            // Gone or fenced off, else it still owns something.
            let state = row_state(&self.pool, kind, id).await?;
            if state.is_none_or(|s| fence.is_some_and(|t| t < s.fence)) {
                return Err(sql::explain_miss(kind, id, state, None, fence).into());
            }
            match dependents_of(&self.pool, id).await?.first() {
                Some(dependent) => Err(sql::still_owns(kind, id, dependent).into()),
                None => {
                    Err(Error::conflict(format!("{kind} {id} changed concurrently; retry")).into())
                }
            }
        })
        .await?;
        self.wrote();
        Ok(())
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn claim(
        &self,
        claimer: &str,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<OutboxEntry>> {
        self.complete_and_claim(&[], claimer, limit, claim_for)
            .await
    }

    async fn complete_and_claim(
        &self,
        published: &[u64],
        claimer: &str,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<OutboxEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let published: Vec<i64> = published
            .iter()
            .map(|s| as_i64(*s))
            .collect::<Result<_>>()?;
        // One round trip: the published entries go, and the claim skips them (a statement's
        // parts see one snapshot, in which they are still there).
        let rows = with_retry("outbox claim", || async {
            let rows = sqlx::query_as::<_, OutboxRow>(
                "WITH done AS (DELETE FROM threeport_outbox WHERE seq = ANY($4)) \
                 UPDATE threeport_outbox SET claimed_by = $1, \
                 claimed_until = now() + $3::BIGINT * INTERVAL '1 microsecond' \
                 WHERE seq IN (SELECT seq FROM threeport_outbox \
                   WHERE (claimed_until IS NULL OR claimed_until <= now() OR claimed_by = $1) \
                   AND seq <> ALL($4) \
                   ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING seq, kind, object_id, operation, version",
            )
            .bind(claimer)
            .bind(limit)
            .bind(micros(claim_for))
            .bind(&published)
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
            sqlx::query("DELETE FROM threeport_outbox WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    async fn wait_for_entries(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.outbox_wake.notified()).await;
    }
}

#[async_trait]
impl Locker for PgStore {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let token = with_retry("lease acquire", || async {
            let row = sqlx::query(
                "INSERT INTO threeport_leases (key, holder, token, expires_at) \
                 VALUES ($1, $2, nextval('threeport_lease_tokens'), now() + $3::BIGINT * INTERVAL '1 microsecond') \
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, token = excluded.token, \
                 expires_at = excluded.expires_at WHERE threeport_leases.expires_at <= now() \
                 RETURNING token",
            )
            .bind(key)
            .bind(holder)
            .bind(micros(ttl))
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|r| r.try_get::<i64, _>("token")).transpose()?)
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
            let row = sqlx::query(
                "UPDATE threeport_leases SET expires_at = now() + $3::BIGINT * INTERVAL '1 microsecond' \
                 WHERE key = $1 AND token = $2 AND expires_at > now() RETURNING token",
            )
            .bind(&lease.key)
            .bind(token)
            .bind(micros(lease.ttl))
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.is_some())
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
            sqlx::query("DELETE FROM threeport_leases WHERE key = $1 AND token = $2")
                .bind(&lease.key)
                .bind(token)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }
}
