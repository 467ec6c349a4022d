//! The queue of [`SqlBus`](super::SqlBus) on PostgreSQL or CockroachDB: deadlines on the
//! database clock (every process agrees), claims skip rows another transaction holds.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use threeport_core::{Notification, ObjectId, Result};

use super::{Claimed, Queue};
use crate::sql::{OpError, as_i64, as_u64, micros, operation_name, parse_operation, with_retry};

/// The columns a claim returns.
macro_rules! returned {
    () => {
        " RETURNING seq, token, kind, object_id, operation, version, attempt, due_at"
    };
}

#[derive(Debug)]
pub(crate) struct PgQueue {
    pool: PgPool,
}

impl PgQueue {
    pub(crate) fn new(pool: PgPool) -> Self {
        PgQueue { pool }
    }
}

fn claimed(row: &PgRow) -> std::result::Result<Claimed, OpError> {
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
        attempt: u32::try_from(row.try_get::<i32, _>("attempt")?).unwrap_or_default(),
        due_at: SystemTime::from(row.try_get::<DateTime<Utc>, _>("due_at")?),
    })
}

#[async_trait]
impl Queue for PgQueue {
    async fn insert(&self, notifications: &[Notification], only_missing: bool) -> Result<()> {
        // Folding is best effort under concurrency: two processes publishing for one object at
        // once may leave two rows, which is harmless (notifications are hints).
        const FOLD: &str = "WITH folded AS (UPDATE threeport_queue SET \
             version = GREATEST(version, $4), operation = $3, \
             visible_at = LEAST(visible_at, now()), due_at = LEAST(due_at, now()) \
             WHERE kind = $1 AND object_id = $2 AND attempt = 0 RETURNING seq) \
             INSERT INTO threeport_queue (kind, object_id, operation, version, visible_at, due_at) \
             SELECT $1, $2, $3, $4, now(), now() WHERE NOT EXISTS (SELECT 1 FROM folded)";
        const MISSING: &str = "INSERT INTO threeport_queue \
             (kind, object_id, operation, version, visible_at, due_at) \
             SELECT $1, $2, $3, $4, now(), now() WHERE NOT EXISTS \
             (SELECT 1 FROM threeport_queue WHERE kind = $1 AND object_id = $2)";
        let sql = if only_missing { MISSING } else { FOLD };
        with_retry("queue insert", || async {
            let mut tx = self.pool.begin().await?;
            for n in notifications {
                sqlx::query(sql)
                    .bind(&n.kind)
                    .bind(n.id.0)
                    .bind(operation_name(n.operation))
                    .bind(as_i64(n.version)?)
                    .execute(&mut *tx)
                    .await?;
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
            let mut dead = Vec::new();
            if let Some(max) = max_deliveries {
                let rows = sqlx::query(concat!(
                    "DELETE FROM threeport_queue WHERE kind = ANY($1) AND visible_at <= now() \
                     AND attempt >= $2",
                    returned!()
                ))
                .bind(kinds)
                .bind(i32::try_from(max).unwrap_or(i32::MAX))
                .fetch_all(&self.pool)
                .await?;
                for row in &rows {
                    dead.push(claimed(row)?);
                }
            }
            let rows = sqlx::query(concat!(
                "UPDATE threeport_queue SET due_at = visible_at, \
                 visible_at = now() + $3::BIGINT * INTERVAL '1 microsecond', \
                 attempt = attempt + 1, token = token + 1 \
                 WHERE seq IN (SELECT seq FROM threeport_queue \
                   WHERE kind = ANY($1) AND visible_at <= now() \
                   ORDER BY visible_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                returned!()
            ))
            .bind(kinds)
            .bind(limit)
            .bind(micros(ack_wait))
            .fetch_all(&self.pool)
            .await?;
            let mut claimed_rows = Vec::with_capacity(rows.len());
            for row in &rows {
                claimed_rows.push(claimed(row)?);
            }
            claimed_rows.sort_by_key(|c| (c.due_at, c.seq));
            Ok((dead, claimed_rows))
        })
        .await
    }

    async fn ack(&self, seq: i64, token: i64) -> Result<bool> {
        with_retry("queue ack", || async {
            let done = sqlx::query("DELETE FROM threeport_queue WHERE seq = $1 AND token = $2")
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
            let mut tx = self.pool.begin().await?;
            let held = sqlx::query(
                "SELECT kind, object_id FROM threeport_queue \
                 WHERE seq = $1 AND token = $2 AND attempt > 0 FOR UPDATE",
            )
            .bind(seq)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(held) = held else {
                return Ok(false);
            };
            let folded = sqlx::query(
                "UPDATE threeport_queue SET \
                 visible_at = LEAST(visible_at, now() + $1::BIGINT * INTERVAL '1 microsecond'), \
                 due_at = LEAST(due_at, now() + $1::BIGINT * INTERVAL '1 microsecond') \
                 WHERE kind = $2 AND object_id = $3 AND attempt = 0",
            )
            .bind(micros(delay))
            .bind(held.try_get::<String, _>("kind")?)
            .bind(held.try_get::<uuid::Uuid, _>("object_id")?)
            .execute(&mut *tx)
            .await?;
            if folded.rows_affected() > 0 {
                sqlx::query("DELETE FROM threeport_queue WHERE seq = $1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "UPDATE threeport_queue SET \
                     visible_at = now() + $1::BIGINT * INTERVAL '1 microsecond', \
                     due_at = now() + $1::BIGINT * INTERVAL '1 microsecond', \
                     attempt = 0, token = token + 1 WHERE seq = $2",
                )
                .bind(micros(delay))
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn extend(&self, seq: i64, token: i64, ack_wait: Duration) -> Result<bool> {
        with_retry("queue extend", || async {
            let done = sqlx::query(
                "UPDATE threeport_queue SET visible_at = now() + $3::BIGINT * INTERVAL '1 microsecond' \
                 WHERE seq = $1 AND token = $2 AND attempt > 0",
            )
            .bind(seq)
            .bind(token)
            .bind(micros(ack_wait))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn unclaim(&self, claims: &[(i64, i64)]) -> Result<()> {
        let seqs: Vec<i64> = claims.iter().map(|(seq, _)| *seq).collect();
        let tokens: Vec<i64> = claims.iter().map(|(_, token)| *token).collect();
        with_retry("queue unclaim", || async {
            sqlx::query(
                "UPDATE threeport_queue q SET visible_at = q.due_at, attempt = q.attempt - 1 \
                 FROM (SELECT unnest($1::BIGINT[]) AS seq, unnest($2::BIGINT[]) AS token) c \
                 WHERE q.seq = c.seq AND q.token = c.token AND q.attempt > 0",
            )
            .bind(&seqs)
            .bind(&tokens)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn next_visible(&self, kinds: &[String]) -> Result<Option<Duration>> {
        with_retry("queue next", || async {
            let micros: Option<i64> = sqlx::query_scalar(
                "SELECT (EXTRACT(EPOCH FROM (MIN(visible_at) - now())) * 1000000)::BIGINT \
                 FROM threeport_queue WHERE kind = ANY($1)",
            )
            .bind(kinds)
            .fetch_one(&self.pool)
            .await?;
            Ok(micros.map(|us| Duration::from_micros(u64::try_from(us).unwrap_or_default())))
        })
        .await
    }
}
