//! The queue of [`SqlBus`](super::SqlBus) on SQLite: times are this machine's clock in
//! microseconds (every process sharing the file has it); writes take the write lock up front.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use threeport_core::{Notification, ObjectId, Result};

use super::{Claimed, Queue};
use crate::sql::{as_i64, as_u64, micros, operation_name, parse_operation, with_retry};

/// Takes SQLite's write lock at the start of the transaction.
const BEGIN: &str = "BEGIN IMMEDIATE";

#[derive(Debug)]
pub(crate) struct SqliteQueue {
    pool: SqlitePool,
}

impl SqliteQueue {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        SqliteQueue { pool }
    }
}

fn now_us() -> i64 {
    micros(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn at_us(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or_default())
}

/// `kind IN (?, ?, …)` for a query being built.
fn push_kinds(sql: &mut QueryBuilder<Sqlite>, kinds: &[String]) {
    sql.push("kind IN (");
    let mut list = sql.separated(", ");
    for kind in kinds {
        list.push_bind(kind.clone());
    }
    sql.push(")");
}

fn claimed(row: &sqlx::sqlite::SqliteRow) -> std::result::Result<Claimed, crate::sql::OpError> {
    let operation: String = row.try_get("operation")?;
    Ok(Claimed {
        seq: row.try_get("seq")?,
        token: row.try_get("token")?,
        notification: Notification::new(
            row.try_get::<String, _>("kind")?,
            ObjectId(row.try_get("object_id")?),
            parse_operation(&operation)?,
            as_u64(row.try_get("version")?),
        ),
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(u32::MAX),
        due_at: at_us(row.try_get("due_us")?),
    })
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn insert(&self, notifications: &[Notification], only_missing: bool) -> Result<()> {
        with_retry("queue insert", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let now = now_us();
            for n in notifications {
                let version = as_i64(n.version)?;
                let held = if only_missing {
                    sqlx::query("SELECT 1 FROM threeport_queue WHERE kind = ? AND object_id = ? LIMIT 1")
                        .bind(&n.kind)
                        .bind(n.id.0)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some()
                } else {
                    let folded = sqlx::query(
                        "UPDATE threeport_queue SET version = MAX(version, ?1), operation = ?2, \
                         visible_us = MIN(visible_us, ?3), due_us = MIN(due_us, ?3) \
                         WHERE kind = ?4 AND object_id = ?5 AND attempt = 0",
                    )
                    .bind(version)
                    .bind(operation_name(n.operation))
                    .bind(now)
                    .bind(&n.kind)
                    .bind(n.id.0)
                    .execute(&mut *tx)
                    .await?;
                    folded.rows_affected() > 0
                };
                if !held {
                    sqlx::query(
                        "INSERT INTO threeport_queue (kind, object_id, operation, version, visible_us, due_us) \
                         VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&n.kind)
                    .bind(n.id.0)
                    .bind(operation_name(n.operation))
                    .bind(version)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn claim(
        &self,
        kinds: &[String],
        limit: usize,
        ack_wait: Duration,
        max_deliveries: Option<u32>,
    ) -> Result<(Vec<Claimed>, Vec<Claimed>)> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_retry("queue claim", || async {
            let now = now_us();
            let mut dead = Vec::new();
            if let Some(max) = max_deliveries {
                let mut sql = QueryBuilder::<Sqlite>::new("DELETE FROM threeport_queue WHERE ");
                push_kinds(&mut sql, kinds);
                sql.push(" AND visible_us <= ")
                    .push_bind(now)
                    .push(" AND attempt >= ")
                    .push_bind(i64::from(max))
                    .push(" RETURNING seq, token, kind, object_id, operation, version, attempt, due_us");
                for row in sql.build().fetch_all(&self.pool).await? {
                    dead.push(claimed(&row)?);
                }
            }
            let mut sql = QueryBuilder::<Sqlite>::new(
                "UPDATE threeport_queue SET due_us = visible_us, visible_us = ",
            );
            sql.push_bind(now.saturating_add(micros(ack_wait)))
                .push(", attempt = attempt + 1, token = token + 1 WHERE seq IN (SELECT seq FROM threeport_queue WHERE ");
            push_kinds(&mut sql, kinds);
            sql.push(" AND visible_us <= ")
                .push_bind(now)
                .push(" ORDER BY visible_us LIMIT ")
                .push_bind(limit)
                .push(") RETURNING seq, token, kind, object_id, operation, version, attempt, due_us");
            let mut rows = Vec::new();
            for row in sql.build().fetch_all(&self.pool).await? {
                rows.push(claimed(&row)?);
            }
            rows.sort_by_key(|c| (c.due_at, c.seq));
            Ok((dead, rows))
        })
        .await
    }

    async fn ack(&self, seq: i64, token: i64) -> Result<bool> {
        with_retry("queue ack", || async {
            let done = sqlx::query("DELETE FROM threeport_queue WHERE seq = ? AND token = ?")
                .bind(seq)
                .bind(token)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn requeue(&self, seq: i64, token: i64, delay: Duration) -> Result<bool> {
        with_retry("queue requeue", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            let held = sqlx::query(
                "SELECT kind, object_id FROM threeport_queue WHERE seq = ? AND token = ? AND attempt > 0",
            )
            .bind(seq)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(held) = held else {
                return Ok(false);
            };
            let at = now_us().saturating_add(micros(delay));
            let folded = sqlx::query(
                "UPDATE threeport_queue SET visible_us = MIN(visible_us, ?1), due_us = MIN(due_us, ?1) \
                 WHERE kind = ?2 AND object_id = ?3 AND attempt = 0",
            )
            .bind(at)
            .bind(held.try_get::<String, _>("kind")?)
            .bind(held.try_get::<uuid::Uuid, _>("object_id")?)
            .execute(&mut *tx)
            .await?;
            let this = if folded.rows_affected() > 0 {
                sqlx::query("DELETE FROM threeport_queue WHERE seq = ?").bind(seq)
            } else {
                sqlx::query(
                    "UPDATE threeport_queue SET visible_us = ?1, due_us = ?1, attempt = 0, \
                     token = token + 1 WHERE seq = ?2",
                )
                .bind(at)
                .bind(seq)
            };
            this.execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn extend(&self, seq: i64, token: i64, ack_wait: Duration) -> Result<bool> {
        with_retry("queue extend", || async {
            let done = sqlx::query(
                "UPDATE threeport_queue SET visible_us = ? WHERE seq = ? AND token = ? AND attempt > 0",
            )
            .bind(now_us().saturating_add(micros(ack_wait)))
            .bind(seq)
            .bind(token)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn unclaim(&self, claims: &[(i64, i64)]) -> Result<()> {
        with_retry("queue unclaim", || async {
            let mut tx = self.pool.begin_with(BEGIN).await?;
            for (seq, token) in claims {
                sqlx::query(
                    "UPDATE threeport_queue SET visible_us = due_us, attempt = attempt - 1 \
                     WHERE seq = ? AND token = ? AND attempt > 0",
                )
                .bind(seq)
                .bind(token)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn next_visible(&self, kinds: &[String]) -> Result<Option<Duration>> {
        with_retry("queue next", || async {
            let mut sql = QueryBuilder::<Sqlite>::new(
                "SELECT MIN(visible_us) AS next FROM threeport_queue WHERE ",
            );
            push_kinds(&mut sql, kinds);
            let next: Option<i64> = sql.build().fetch_one(&self.pool).await?.try_get("next")?;
            Ok(next
                .map(|at| Duration::from_micros(u64::try_from(at - now_us()).unwrap_or_default())))
        })
        .await
    }
}
