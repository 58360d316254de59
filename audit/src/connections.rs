//! The writer's own PostgreSQL connections, and storing one batch on one.
//!
//! Why not a pool connection per batch: sqlx pings a pooled connection when
//! it is taken and again when it is given back, two round trips per batch
//! beside the one `COPY` (at low concurrency a batch is one turn). The writer
//! takes connections from the pool once, detaches them and keeps them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::error::AuditError;
use crate::store::{insert_records, Record};

/// Idle connections for batches, shared by the writer's insert tasks.
#[derive(Clone)]
pub(crate) struct Connections {
    pool: PgPool,
    idle: Arc<Mutex<Vec<PgConnection>>>,
    /// Most idle connections kept (the batches stored at once).
    keep: usize,
    /// Deadline for taking a new connection from the pool.
    acquire_timeout: Duration,
    /// Deadline for a whole batch, connection included.
    call_timeout: Duration,
}

impl Connections {
    /// Connections from `pool`, at most `keep` kept idle.
    pub(crate) fn new(
        pool: PgPool,
        keep: usize,
        acquire_timeout: Duration,
        call_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            idle: Arc::default(),
            keep: keep.max(1),
            acquire_timeout,
            call_timeout,
        }
    }

    /// The pool the connections come from.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stores `records` on one connection, the whole within the call
    /// deadline; a timeout counts as the database being unreachable. After a
    /// failure every idle connection is dropped: they most likely share the
    /// fate of the one that failed (a restarted server), and the next batch
    /// must not find out one dead connection at a time.
    pub(crate) async fn store(&self, records: &[Record]) -> Result<(), AuditError> {
        let call = async {
            let mut conn = self.take().await?;
            insert_records(&mut conn, records).await?;
            self.give_back(conn);
            Ok::<(), AuditError>(())
        };
        let result = match tokio::time::timeout(self.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(AuditError::Database(sqlx::Error::PoolTimedOut)),
        };
        if result.is_err() {
            self.forget_idle();
        }
        result
    }

    /// Drops the idle connections (after a failure that may have killed them).
    pub(crate) fn forget_idle(&self) {
        self.idle().clear();
    }

    /// An idle connection, or a new one from the pool within the acquire
    /// deadline: sqlx retries a refused connect until the pool's own (longer)
    /// timeout, and answers waiting to be durable must not wait that long.
    pub(crate) async fn take(&self) -> Result<PgConnection, AuditError> {
        if let Some(conn) = self.idle().pop() {
            return Ok(conn);
        }
        let pooled = tokio::time::timeout(self.acquire_timeout, self.pool.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(pooled.detach())
    }

    /// Keeps `conn` for the next batch (if fewer than the most are idle).
    pub(crate) fn give_back(&self, conn: PgConnection) {
        let mut idle = self.idle();
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<PgConnection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
