//! Group commit on PostgreSQL: the creates (a plain POST, a record a controller makes for
//! its object), status writes (every reconcile ends with one) and reads by id that this
//! process makes concurrently go to the database as one statement per batch
//! ([`crate::coalesce`]), with the same checks and notifications each would have had alone.
//! A request whose row the batch did not write (a name taken, a link missing, a version
//! moved on, a fence passed), or a batch that failed, runs alone, so every caller gets the
//! answer and the error it would have got without batching.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use threeport_core::{Error, NewObject, ObjectId, RawObject, Result, Status, StatusWrite};
use uuid::Uuid;

use super::{RowsQuery, create_linked, create_plain, get_alone, links_of, update_status_alone};
use crate::coalesce::Coalescer;
use crate::sql::{ObjectRow, as_i64, with_retry};

/// Requests served in a batch with others, since the process started (diagnostics, tests).
static BATCHED: AtomicU64 = AtomicU64::new(0);

/// How many creates, status writes and reads by id this process made on PostgreSQL in one
/// statement with others (group commit), since it started.
pub fn batched_writes() -> u64 {
    BATCHED.load(Ordering::Relaxed)
}

/// Lanes per kind of request: batches in flight at once (each holds one of the keyed
/// connections while it runs). Few, so that requests wait for a lane and go together; more
/// than one, so that a batch waiting on a row lock (a deletion's) does not hold up every other
/// write of its kind in the process.
const LANES: usize = 2;
/// Most requests in one statement.
const MAX_BATCH: usize = 64;

/// A create.
pub(super) struct NewCreate {
    id: ObjectId,
    new: NewObject,
}

/// A status write.
pub(super) struct StatusChange {
    kind: String,
    id: ObjectId,
    write: StatusWrite,
}

/// The coalescers of one store's pool.
#[derive(Debug)]
pub(super) struct Batches {
    creates: Coalescer<NewCreate, Result<RawObject>>,
    linked_creates: Coalescer<NewCreate, Result<RawObject>>,
    statuses: Coalescer<StatusChange, Result<RawObject>>,
    gets: Coalescer<(String, ObjectId), Result<RawObject>>,
    /// Where a request runs alone when no lane can take it.
    db: Db,
}

/// What the lanes' batches run on.
#[derive(Debug, Clone)]
struct Db {
    pool: PgPool,
    followed: Arc<Followed>,
}

impl Db {
    /// Whether a batch of `kinds` goes without the followers' part (see [`Followed`]), even
    /// a lone request.
    async fn lean<'k>(&self, kinds: impl Iterator<Item = &'k str>) -> bool {
        !self.followed.any(&self.pool, kinds).await
    }

    /// After a lean statement (see [`Followed`]) wrote fewer rows than it was given: one it
    /// kept out may be of a kind followed since the relations were read.
    fn after_batch(&self, lean: bool, written: &Result<Vec<ObjectRow>>, given: usize) {
        if lean && written.as_ref().is_ok_and(|rows| rows.len() < given) {
            self.followed.forget();
        }
    }
}

/// Lanes that run their batches through `run` on `db`.
fn lanes<Req, Fut>(db: &Db, run: fn(Db, Vec<Req>) -> Fut) -> Coalescer<Req, Result<RawObject>>
where
    Req: Send + 'static,
    Fut: std::future::Future<Output = Vec<Result<RawObject>>> + Send + 'static,
{
    let db = db.clone();
    Coalescer::start(LANES, MAX_BATCH, move |batch| run(db.clone(), batch))
}

impl Batches {
    /// Starts the lanes on the current runtime; they hold `pool` (not the store), and so
    /// does the coalescers' owner for the requests no lane can take.
    pub(super) fn start(pool: &PgPool) -> Self {
        let db = Db {
            pool: pool.clone(),
            followed: Arc::default(),
        };
        Batches {
            creates: lanes(&db, |db, batch| create_many(db, batch, Links::None)),
            linked_creates: lanes(&db, |db, batch| create_many(db, batch, Links::Checked)),
            statuses: lanes(&db, update_status_batch),
            gets: lanes(&db, get_batch),
            db,
        }
    }

    /// Relations were registered through this store: the kinds followed are read again
    /// before the next batch.
    pub(super) fn relations_changed(&self) {
        self.db.followed.forget();
    }

    /// Creates `new` with id `id`, in a batch with the other creates waiting of its sort
    /// (with links to check, or without).
    pub(super) async fn create(&self, id: ObjectId, new: NewObject) -> Result<RawObject> {
        let links = Links::of(&new);
        let coalescer = match links {
            Links::None => &self.creates,
            Links::Checked => &self.linked_creates,
        };
        match coalescer.submit(NewCreate { id, new }).await {
            Ok(answer) => answer,
            Err(Some(request)) => links.create_alone(&self.db.pool, &request).await,
            Err(None) => Err(interrupted()),
        }
    }

    /// Writes a status, in a batch when others wait.
    pub(super) async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> Result<RawObject> {
        let change = StatusChange {
            kind: kind.to_owned(),
            id,
            write,
        };
        match self.statuses.submit(change).await {
            Ok(answer) => answer,
            Err(Some(change)) => {
                update_status_alone(&self.db.pool, &change.kind, change.id, &change.write).await
            }
            Err(None) => Err(interrupted()),
        }
    }

    /// Reads one object, in a batch when others wait.
    pub(super) async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject> {
        match self.gets.submit((kind.to_owned(), id)).await {
            Ok(answer) => answer,
            Err(Some((kind, id))) => get_alone(&self.db.pool, &kind, id).await,
            Err(None) => Err(interrupted()),
        }
    }
}

/// A request a lane took and never answered: its runtime stopped mid-batch.
fn interrupted() -> Error {
    Error::unavailable(
        "the request was interrupted (the process is stopping); a write may have been made",
    )
}

/// How long the kinds followed, once read, decide which statement a batch tries first.
const FOLLOWED_FOR: Duration = Duration::from_secs(5);

/// The kinds some registered relation follows, as last read: whether a batch of creates
/// (with links or without) or status writes of a kind goes without the followers' part of
/// the statement (most of what PostgreSQL spends starting one). Only a hint: that statement itself writes no row of a
/// kind followed when it runs (`NOT EXISTS` on the relations, in the statement's snapshot,
/// as the followers' part reads them), and such a row runs alone with every check. A
/// relation registered by another process is seen here after at most [`FOLLOWED_FOR`], or
/// at the first row it keeps out.
#[derive(Debug, Default)]
struct Followed {
    read: std::sync::Mutex<Option<(HashSet<String>, Instant)>>,
}

impl Followed {
    /// Whether a relation follows any of `kinds` (as last read, at most `FOLLOWED_FOR`
    /// ago); `true` when the relations cannot be read.
    async fn any<'k>(&self, pool: &PgPool, mut kinds: impl Iterator<Item = &'k str>) -> bool {
        let fresh = self
            .read
            .lock()
            .unwrap()
            .as_ref()
            .filter(|(_, at)| at.elapsed() < FOLLOWED_FOR)
            .map(|(followed, _)| kinds.any(|kind| followed.contains(kind)));
        if let Some(any) = fresh {
            return any;
        }
        let read: sqlx::Result<Vec<(String,)>> =
            sqlx::query_as("SELECT DISTINCT followed FROM threeport_relations")
                .fetch_all(pool)
                .await;
        match read {
            Ok(rows) => {
                let followed: HashSet<String> = rows.into_iter().map(|(kind,)| kind).collect();
                let any = kinds.any(|kind| followed.contains(kind));
                *self.read.lock().unwrap() = Some((followed, Instant::now()));
                any
            }
            Err(_) => true,
        }
    }

    /// Reads the relations again before the next decision.
    fn forget(&self) {
        self.read.lock().unwrap().take();
    }
}

/// A request and its place in its batch.
type Placed<T> = (usize, T);

/// Splits off the requests whose key came earlier in the batch: one statement must not
/// write one row twice. They run alone afterwards.
fn split_repeats<T, K: std::hash::Hash + Eq>(
    batch: Vec<T>,
    key: impl Fn(&T) -> K,
) -> (Vec<Placed<T>>, Vec<Placed<T>>) {
    let mut seen = HashSet::new();
    batch
        .into_iter()
        .enumerate()
        .partition(|(_, request)| seen.insert(key(request)))
}

/// Answers in request order from the rows a batch wrote (by id); each request whose row is
/// missing, or every request when the batch failed, runs `alone`.
async fn answer<T, F, Fut>(
    total: usize,
    batched: Vec<Placed<T>>,
    repeats: Vec<Placed<T>>,
    written: Result<Vec<ObjectRow>>,
    id_of: impl Fn(&T) -> ObjectId,
    alone: F,
) -> Vec<Result<RawObject>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<RawObject>>,
{
    let mut rows: HashMap<Uuid, RawObject> = match written {
        Ok(rows) => {
            BATCHED.fetch_add(rows.len() as u64, Ordering::Relaxed);
            rows.into_iter()
                .map(|row| {
                    let raw = RawObject::from(row);
                    (raw.meta.id.0, raw)
                })
                .collect()
        }
        Err(err) => {
            tracing::debug!(error = %err, "a batched write failed; its requests run alone");
            HashMap::new()
        }
    };
    let mut answers: Vec<Option<Result<RawObject>>> = (0..total).map(|_| None).collect();
    for (at, request) in batched.into_iter().chain(repeats) {
        answers[at] = Some(match rows.remove(&id_of(&request).0) {
            Some(raw) => Ok(raw),
            None => alone(request).await,
        });
    }
    answers
        .into_iter()
        .map(|answer| answer.expect("every request is answered"))
        .collect()
}

/// Binds a batch of creates as `$1`–`$8` of a batch create statement: one array per column,
/// in request order, and the new objects' status.
fn bind_creates<'q>(
    query: RowsQuery<'q>,
    requests: &[&'q NewCreate],
    status: &'q Json<Status<Value>>,
) -> RowsQuery<'q> {
    query
        .bind(requests.iter().map(|r| r.id.0).collect::<Vec<_>>())
        .bind(requests.iter().map(|r| &r.new.kind).collect::<Vec<_>>())
        .bind(requests.iter().map(|r| &r.new.name).collect::<Vec<_>>())
        .bind(
            requests
                .iter()
                .map(|r| Json(&r.new.labels))
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| Json(&r.new.references))
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| Json(&r.new.spec))
                .collect::<Vec<_>>(),
        )
        .bind(status)
        .bind(
            requests
                .iter()
                .map(|r| Json(&r.new.owners))
                .collect::<Vec<_>>(),
        )
}

/// The rows of a batch create, `$1`–`$8`.
macro_rules! create_rows {
    ($filter:expr) => {
        concat!(
            "WITH written AS (INSERT INTO threeport_objects \
             (id, kind, name, version, generation, created_at, updated_at, labels, refs, owners, spec, status) \
             SELECT i.id, i.kind, i.name, 1, 1, now(), now(), i.labels, i.refs, i.owners, i.spec, $7 \
             FROM unnest($1::UUID[], $2::TEXT[], $3::TEXT[], $4::JSONB[], $5::JSONB[], $6::JSONB[], $8::JSONB[]) \
             WITH ORDINALITY AS i(id, kind, name, labels, refs, spec, owners, n) ",
            $filter,
            " ORDER BY i.n ON CONFLICT DO NOTHING RETURNING "
        )
    };
}

/// As `created!()` without the followers' part: the end of a create that keeps out the
/// rows of kinds a relation follows.
macro_rules! created_lean {
    () => {
        concat!(
            columns!(),
            "), ",
            notify!("created"),
            " SELECT ",
            columns!(),
            " FROM written"
        )
    };
}

/// Keeps out the rows of kinds a relation follows (see [`Followed`]).
macro_rules! unfollowed {
    () => {
        "NOT EXISTS (SELECT 1 FROM threeport_relations r WHERE r.followed = i.kind)"
    };
}

/// The rows of a batch create with links, `$1`–`$11`: each only if every object it links to
/// exists with the kind named and is not being deleted.
macro_rules! create_linked_rows {
    ($filter:expr) => {
        concat!(
            "WITH input AS (SELECT * FROM unnest($1::UUID[], $2::TEXT[], $3::TEXT[], $4::JSONB[], \
             $5::JSONB[], $6::JSONB[], $8::JSONB[]) WITH ORDINALITY AS i(id, kind, name, labels, refs, spec, owners, n)), \
             links AS (SELECT * FROM unnest($9::BIGINT[], $10::UUID[], $11::TEXT[]) AS l(n, id, kind)), \
             targets AS (SELECT id, kind, deletion_scheduled_at IS NOT NULL AS deleting \
             FROM threeport_objects WHERE id = ANY($10) ORDER BY id FOR SHARE), \
             written AS (INSERT INTO threeport_objects \
             (id, kind, name, version, generation, created_at, updated_at, labels, refs, owners, spec, status) \
             SELECT i.id, i.kind, i.name, 1, 1, now(), now(), i.labels, i.refs, i.owners, i.spec, $7 \
             FROM input i WHERE NOT EXISTS (SELECT 1 FROM links l LEFT JOIN targets t \
             ON t.id = l.id AND t.kind = l.kind WHERE l.n = i.n AND (t.id IS NULL OR t.deleting)) ",
            $filter,
            " ORDER BY i.n ON CONFLICT DO NOTHING RETURNING "
        )
    };
}

/// Which sort of create a batch holds: with links (owners, references) to check, or
/// without. Each sort has its lanes, its statements and its single create.
#[derive(Clone, Copy)]
enum Links {
    None,
    /// Each row is inserted only if every object it links to exists with the kind named and
    /// is not being deleted (all of them locked `FOR SHARE`), as [`create_linked`] does.
    Checked,
}

impl Links {
    /// The sort of `new`.
    fn of(new: &NewObject) -> Self {
        if new.references.is_empty() && new.owners.is_empty() {
            Links::None
        } else {
            Links::Checked
        }
    }

    /// The batch statements, `[full, lean]`: the lean one without the followers' part.
    fn statements(self) -> [&'static str; 2] {
        match self {
            Links::None => [
                concat!(create_rows!(""), created!()),
                concat!(
                    create_rows!(concat!("WHERE ", unfollowed!())),
                    created_lean!()
                ),
            ],
            Links::Checked => [
                concat!(create_linked_rows!(""), created!()),
                concat!(
                    create_linked_rows!(concat!("AND ", unfollowed!())),
                    created_lean!()
                ),
            ],
        }
    }

    /// Creates one object alone, with every check of its sort.
    async fn create_alone(self, pool: &PgPool, request: &NewCreate) -> Result<RawObject> {
        match self {
            Links::None => create_plain(pool, request.id, &request.new).await,
            Links::Checked => create_linked(pool, request.id, &request.new).await,
        }
    }
}

/// Runs a batch of creates of one sort through its statements (the lean one when no
/// relation follows their kinds, even for a lone request); a request alone otherwise runs as
/// the single create of its sort.
async fn create_many(db: Db, batch: Vec<NewCreate>, links: Links) -> Vec<Result<RawObject>> {
    let pool = &db.pool;
    let alone = |r: NewCreate| async move { links.create_alone(pool, &r).await };
    let [full, lean_sql] = links.statements();
    let lean = db.lean(batch.iter().map(|r| r.new.kind.as_str())).await;
    if let ([_], false) = (batch.as_slice(), lean) {
        let request = batch.into_iter().next().expect("one request");
        return vec![alone(request).await];
    }
    let total = batch.len();
    let (batched, repeats) = split_repeats(batch, |r| r.id);
    let requests: Vec<&NewCreate> = batched.iter().map(|(_, r)| r).collect();
    let (mut link_rows, mut link_ids, mut link_kinds) = (Vec::new(), Vec::new(), Vec::new());
    for (n, request) in (1i64..).zip(&requests) {
        for (id, kind) in links_of(&request.new) {
            link_rows.push(n);
            link_ids.push(id);
            link_kinds.push(kind);
        }
    }
    let status = Json(Status::<Value>::default());
    let written = with_retry("create", || async {
        let query = bind_creates(
            sqlx::query_as(if lean { lean_sql } else { full }),
            &requests,
            &status,
        );
        let query = match links {
            Links::None => query,
            Links::Checked => query.bind(&link_rows).bind(&link_ids).bind(&link_kinds),
        };
        Ok(query.fetch_all(pool).await?)
    })
    .await;
    db.after_batch(lean, &written, requests.len());
    answer(total, batched, repeats, written, |r| r.id, alone).await
}

/// The rows of a batch status write, `$1`–`$5`, each at its expected version and fence.
macro_rules! status_rows {
    ($filter:expr) => {
        concat!(
            "WITH input AS (SELECT * FROM unnest($1::TEXT[], $2::UUID[], $3::JSONB[], $4::BIGINT[], $5::BIGINT[]) \
             AS i(kind, id, status, expected, fence)), \
             written AS (UPDATE threeport_objects o SET status = i.status, version = o.version + 1, \
             updated_at = now(), fence = GREATEST(o.fence, COALESCE(i.fence, o.fence)) FROM input i \
             WHERE o.kind = i.kind AND o.id = i.id AND (i.expected IS NULL OR o.version = i.expected) \
             AND (i.fence IS NULL OR o.fence <= i.fence) ",
            $filter,
            " RETURNING o.id, o.kind, o.name, o.version, o.generation, o.created_at, o.updated_at, \
             o.deletion_scheduled_at, o.labels, o.refs, o.owners, o.spec, o.status)"
        )
    };
}

// As the single write (`update_status_alone`), for a set of rows: `before` reads them as
// they were before the statement (every part of it sees the same snapshot), so a change of
// state, conditions or details notifies the followers.
const STATUS_BATCH_SQL: &str = concat!(
    status_rows!(""),
    ", before AS (SELECT o.id, o.status FROM threeport_objects o JOIN input i \
     ON o.kind = i.kind AND o.id = i.id), ",
    follow!(
        "EXISTS (SELECT 1 FROM before b WHERE b.id = w.id AND ( \
         b.status->'state' IS DISTINCT FROM w.status->'state' \
         OR b.status->'conditions' IS DISTINCT FROM w.status->'conditions' \
         OR b.status->'details' IS DISTINCT FROM w.status->'details'))"
    ),
    " SELECT ",
    columns!(),
    " FROM written"
);

/// As [`STATUS_BATCH_SQL`] for rows of kinds no relation follows (see [`Followed`]).
const STATUS_BATCH_LEAN_SQL: &str = concat!(
    status_rows!(concat!("AND ", unfollowed!())),
    " SELECT ",
    columns!(),
    " FROM written"
);

async fn update_status_batch(db: Db, batch: Vec<StatusChange>) -> Vec<Result<RawObject>> {
    let pool = &db.pool;
    let lean = db.lean(batch.iter().map(|c| c.kind.as_str())).await;
    if let ([_], false) = (batch.as_slice(), lean) {
        let change = batch.into_iter().next().expect("one request");
        return vec![update_status_alone(pool, &change.kind, change.id, &change.write).await];
    }
    let total = batch.len();
    let (batched, repeats) = split_repeats(batch, |c| c.id);
    let changes: Vec<&StatusChange> = batched.iter().map(|(_, c)| c).collect();
    let numbers = |of: fn(&StatusWrite) -> Option<u64>| -> Result<Vec<Option<i64>>> {
        changes
            .iter()
            .map(|c| of(&c.write).map(as_i64).transpose())
            .collect()
    };
    let written = match (numbers(|w| w.expected_version), numbers(|w| w.fence)) {
        (Ok(expected), Ok(fences)) => {
            let sql = if lean {
                STATUS_BATCH_LEAN_SQL
            } else {
                STATUS_BATCH_SQL
            };
            with_retry("update_status", || async {
                Ok(sqlx::query_as::<_, ObjectRow>(sql)
                    .bind(changes.iter().map(|c| &c.kind).collect::<Vec<_>>())
                    .bind(changes.iter().map(|c| c.id.0).collect::<Vec<_>>())
                    .bind(
                        changes
                            .iter()
                            .map(|c| Json(&c.write.status))
                            .collect::<Vec<_>>(),
                    )
                    .bind(&expected)
                    .bind(&fences)
                    .fetch_all(pool)
                    .await?)
            })
            .await
        }
        // A number out of range: each request gets its own error alone.
        (Err(err), _) | (_, Err(err)) => Err(err),
    };
    db.after_batch(lean, &written, changes.len());
    answer(
        total,
        batched,
        repeats,
        written,
        |c| c.id,
        |c| async move { update_status_alone(pool, &c.kind, c.id, &c.write).await },
    )
    .await
}

/// Reads are answered from one `id = ANY(…)` lookup: a row missing from it is missing (or
/// of another kind).
async fn get_batch(db: Db, batch: Vec<(String, ObjectId)>) -> Vec<Result<RawObject>> {
    let pool = &db.pool;
    if let [(kind, id)] = batch.as_slice() {
        return vec![get_alone(pool, kind, *id).await];
    }
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM threeport_objects WHERE id = ANY($1)"
    );
    let ids: Vec<Uuid> = batch.iter().map(|(_, id)| id.0).collect();
    let read = with_retry("get", || async {
        Ok(sqlx::query_as::<_, ObjectRow>(SQL)
            .bind(&ids)
            .fetch_all(pool)
            .await?)
    })
    .await;
    let rows: HashMap<Uuid, RawObject> = match read {
        Ok(rows) => rows
            .into_iter()
            .map(|row| {
                let raw = RawObject::from(row);
                (raw.meta.id.0, raw)
            })
            .collect(),
        Err(err) => {
            tracing::debug!(error = %err, "a batched read failed; its requests run alone");
            let mut answers = Vec::with_capacity(batch.len());
            for (kind, id) in batch {
                answers.push(get_alone(pool, &kind, id).await);
            }
            return answers;
        }
    };
    BATCHED.fetch_add(batch.len() as u64, Ordering::Relaxed);
    batch
        .into_iter()
        .map(|(kind, id)| match rows.get(&id.0) {
            Some(raw) if raw.meta.kind == kind => Ok(raw.clone()),
            _ => Err(Error::not_found(&kind, id)),
        })
        .collect()
}
