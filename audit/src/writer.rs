//! The batching writer: a tokio task off the request path that seals events
//! into its stream's chain and stores them in PostgreSQL, or in the spool
//! while PostgreSQL is unreachable, replaying the spool in order when it
//! returns.

use chrono::{SubsecRound, Utc};
use sqlx::PgPool;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::chain::ChainState;
use crate::connections::Connections;
use crate::error::AuditError;
use crate::event::{AuditEvent, PolicyText};
use crate::ids::{InstanceId, StreamId};
use crate::schema::ensure_partitions;
use crate::spool::{Spool, TornTail};
use crate::store::{Record, StreamRecord};

/// How the writer batches, retries and spools.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// This gateway instance; each writer start opens a new stream for it.
    pub instance_id: InstanceId,
    /// Directory of the spool file.
    pub spool_dir: PathBuf,
    /// Backlog of queued events at which [`AuditHealth::refuse_new_turns`]
    /// turns true. `record` itself never refuses an event: a turn already
    /// admitted keeps every event, and the gateway sheds new turns instead.
    pub queue_capacity: usize,
    /// Most events per database batch.
    pub batch_size: usize,
    /// Longest an event waits in the writer for its batch to fill.
    pub batch_interval: Duration,
    /// Pause between attempts to reach PostgreSQL while it is down.
    pub retry_interval: Duration,
    /// Deadline for one database call before it counts as unreachable.
    pub db_timeout: Duration,
    /// Deadline for taking a connection for a batch. Shorter than the
    /// pool's own: sqlx keeps retrying a refused connect until that runs
    /// out, and durable answers wait on the batch meanwhile.
    pub acquire_timeout: Duration,
    /// Records replayed from the spool per database transaction.
    pub replay_chunk: usize,
    /// Batches stored concurrently (each on its own connection) while the
    /// writer seals the next; 1 stores one batch at a time. The writer keeps
    /// that many connections detached from the pool, beyond its maximum.
    pub max_in_flight: usize,
    /// Months of partitions kept created ahead.
    pub partitions_ahead: u32,
    /// `audit.required`: when set, [`AuditHealth::refuse_new_turns`] is true
    /// while the audit cannot make progress.
    pub required: bool,
}

impl WriterConfig {
    /// Defaults suited to a gateway: 10 000 queued, batches of 2 000 or 50 ms,
    /// three batches stored at once (measured by `examples/writer_bench`).
    pub fn new(instance_id: InstanceId, spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            instance_id,
            spool_dir: spool_dir.into(),
            queue_capacity: 10_000,
            batch_size: 2_000,
            batch_interval: Duration::from_millis(50),
            retry_interval: Duration::from_secs(1),
            db_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(1),
            replay_chunk: 2_000,
            max_in_flight: 3,
            partitions_ahead: crate::schema::DEFAULT_PARTITIONS_AHEAD,
            required: false,
        }
    }
}

/// What a flush found once everything queued before it was durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// True when nothing waits in the spool: all of it is in PostgreSQL.
    pub in_database: bool,
    /// Records still waiting in the spool for replay.
    pub spooled: u64,
}

/// Whether the audit can take events; the gateway answers 503 from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHealth {
    /// `audit.required` is set.
    pub required: bool,
    /// The last database call succeeded.
    pub database_up: bool,
    /// The last spool write succeeded (or none failed yet).
    pub spool_writable: bool,
    /// The writer holds events it could store neither in the database nor the spool.
    pub stalled: bool,
    /// The writer has stopped.
    pub closed: bool,
    /// Events waiting in the queue.
    pub queue_depth: usize,
    /// Backlog at which new turns are refused.
    pub queue_capacity: usize,
}

impl AuditHealth {
    /// True while new events can be taken and stored somewhere durable.
    pub fn can_make_progress(&self) -> bool {
        !self.closed && !self.stalled && (self.database_up || self.spool_writable)
    }

    /// True while the backlog is at or over capacity: the writer is behind.
    pub fn backlogged(&self) -> bool {
        self.queue_depth >= self.queue_capacity
    }

    /// True when the gateway must refuse new turns (503): the writer is
    /// backlogged (whatever `audit.required` says, since shedding load is
    /// what keeps every admitted turn's events within bounded memory), the
    /// writer has stopped, or audit is required and cannot make progress.
    pub fn refuse_new_turns(&self) -> bool {
        self.backlogged() || self.closed || (self.required && !self.can_make_progress())
    }
}

/// Numbers for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterMetrics {
    /// Events waiting in the in-memory queue.
    pub queue_depth: usize,
    /// Backlog at which new turns are refused.
    pub queue_capacity: usize,
    /// Bytes in the spool file.
    pub spool_bytes: u64,
    /// Records waiting in the spool.
    pub spool_records: u64,
    /// Age of the oldest record waiting in the spool.
    pub spool_oldest_age: Option<Duration>,
    /// Events stored in PostgreSQL (directly or by replay).
    pub events_written: u64,
    /// Events written to the spool.
    pub events_spooled: u64,
    /// Events refused because the writer had closed.
    pub events_rejected: u64,
    /// Torn spool tails found at start-up.
    pub torn_tails: u64,
    /// Database calls that failed.
    pub database_errors: u64,
    /// Whether the database is currently reachable.
    pub database_up: bool,
}

enum Item {
    /// An event, and whom to tell once it is durable.
    Event(Box<AuditEvent>, Option<oneshot::Sender<()>>),
    Policy(PolicyText),
    Flush(oneshot::Sender<FlushReport>),
    Shutdown(oneshot::Sender<FlushReport>),
}

#[derive(Debug, Default)]
struct Shared {
    required: bool,
    database_up: AtomicBool,
    spool_failed: AtomicBool,
    stalled: AtomicBool,
    closed: AtomicBool,
    probing: AtomicBool,
    /// Events handed over and not yet taken by the writer.
    queued: AtomicUsize,
    queue_capacity: usize,
    spool_bytes: AtomicU64,
    spool_records: AtomicU64,
    /// Microseconds since the epoch of the oldest spooled record; 0 = none.
    spool_oldest_us: AtomicI64,
    events_written: AtomicU64,
    events_spooled: AtomicU64,
    events_rejected: AtomicU64,
    torn_tails: AtomicU64,
    database_errors: AtomicU64,
    wake: Notify,
}

/// The request path's handle to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    // Unbounded on purpose: an event of an admitted turn is never refused for
    // space (it would be lost); `Shared::queued` bounds the backlog through
    // admission instead.
    tx: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
    stream_id: StreamId,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Item::Event(..) => "Event",
            Item::Policy(_) => "Policy",
            Item::Flush(_) => "Flush",
            Item::Shutdown(_) => "Shutdown",
        })
    }
}

impl AuditHandle {
    /// Hands an event to the writer without waiting; fails only when the
    /// writer has stopped. Never refuses for lack of space: the gateway
    /// sheds new turns while [`AuditHealth::backlogged`] instead.
    pub fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.send_event(event, None)
    }

    /// Hands an event over like [`AuditHandle::record`] and returns what
    /// resolves once it (and so everything handed over before it) is in
    /// PostgreSQL or the fsync'd spool: a caller told of a decision after
    /// that can rely on it surviving a crash.
    pub fn record_durable(&self, event: AuditEvent) -> Result<Durable, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.send_event(event, Some(tx))?;
        Ok(Durable(rx))
    }

    fn send_event(
        &self,
        event: AuditEvent,
        ack: Option<oneshot::Sender<()>>,
    ) -> Result<(), AuditError> {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Item::Event(Box::new(event), ack))
            .map_err(|_| {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared.events_rejected.fetch_add(1, Ordering::Relaxed);
                AuditError::WriterClosed
            })
    }

    /// Stores a policy text (once per id and version; repeats are harmless).
    pub fn register_policy(&self, policy: PolicyText) -> Result<(), AuditError> {
        self.tx
            .send(Item::Policy(policy))
            .map_err(|_| AuditError::WriterClosed)
    }

    /// Waits until everything handed over before this call is durable (in
    /// PostgreSQL or the fsync'd spool); also tries to drain the spool once.
    pub async fn flush(&self) -> Result<FlushReport, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Item::Flush(tx))
            .map_err(|_| AuditError::WriterClosed)?;
        rx.await.map_err(|_| AuditError::WriterClosed)
    }

    /// Stores everything queued, stops the writer and waits for it.
    pub async fn shutdown(&self) -> Result<FlushReport, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Item::Shutdown(tx))
            .map_err(|_| AuditError::WriterClosed)?;
        rx.await.map_err(|_| AuditError::WriterClosed)
    }

    /// The stream this writer chains events into.
    pub fn stream_id(&self) -> StreamId {
        self.stream_id
    }

    /// Current health, for readiness and for refusing turns.
    pub fn health(&self) -> AuditHealth {
        let s = &self.shared;
        AuditHealth {
            required: s.required,
            database_up: s.database_up.load(Ordering::Relaxed),
            spool_writable: !s.spool_failed.load(Ordering::Relaxed),
            stalled: s.stalled.load(Ordering::Relaxed),
            closed: s.closed.load(Ordering::Relaxed) || self.tx.is_closed(),
            queue_depth: self.queue_depth(),
            queue_capacity: s.queue_capacity,
        }
    }

    /// Current metrics.
    pub fn metrics(&self) -> WriterMetrics {
        let s = &self.shared;
        let oldest = s.spool_oldest_us.load(Ordering::Relaxed);
        let spool_oldest_age = (oldest != 0).then(|| {
            let now = Utc::now().timestamp_micros();
            Duration::from_micros(u64::try_from(now - oldest).unwrap_or(0))
        });
        WriterMetrics {
            queue_depth: self.queue_depth(),
            queue_capacity: s.queue_capacity,
            spool_bytes: s.spool_bytes.load(Ordering::Relaxed),
            spool_records: s.spool_records.load(Ordering::Relaxed),
            spool_oldest_age,
            events_written: s.events_written.load(Ordering::Relaxed),
            events_spooled: s.events_spooled.load(Ordering::Relaxed),
            events_rejected: s.events_rejected.load(Ordering::Relaxed),
            torn_tails: s.torn_tails.load(Ordering::Relaxed),
            database_errors: s.database_errors.load(Ordering::Relaxed),
            database_up: s.database_up.load(Ordering::Relaxed),
        }
    }

    fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

/// Resolves once an event handed over with [`AuditHandle::record_durable`]
/// is durable.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<()>);

impl Durable {
    /// Waits; fails if the writer stopped (or could not seal the event)
    /// before the event was stored.
    pub async fn wait(self) -> Result<(), AuditError> {
        self.0.await.map_err(|_| AuditError::WriterClosed)
    }
}

/// Records gathered for storing, and the callers waiting for them.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<Record>,
    /// Told once every record of the batch is durable.
    acks: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Tells the waiting callers their events are durable.
    fn acknowledge(self) {
        for ack in self.acks {
            let _ = ack.send(());
        }
    }

    /// Puts `earlier` back in front of this batch.
    fn put_back(&mut self, earlier: Batch) {
        self.records.splice(0..0, earlier.records);
        self.acks.splice(0..0, earlier.acks);
    }
}

/// Starting the writer.
pub struct AuditWriter;

/// What [`AuditWriter::spawn`] returns besides the handle.
#[derive(Debug)]
pub struct SpawnedWriter {
    /// The request path's handle.
    pub handle: AuditHandle,
    /// The writer task; ends after [`AuditHandle::shutdown`] or when every handle is dropped.
    pub task: JoinHandle<()>,
    /// A torn spool tail found at start-up, if any (also logged and counted).
    pub torn_tail: Option<TornTail>,
}

impl AuditWriter {
    /// Opens the spool (detecting a torn tail) and starts the writer task on
    /// the current tokio runtime. The pool should connect lazily so the
    /// gateway can start while PostgreSQL is down.
    pub fn spawn(pool: PgPool, config: WriterConfig) -> Result<SpawnedWriter, AuditError> {
        let (spool, torn_tail) =
            Spool::open(&config.spool_dir).map_err(|source| AuditError::Spool {
                path: config.spool_dir.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            required: config.required,
            queue_capacity: config.queue_capacity.max(1),
            ..Shared::default()
        });
        shared.database_up.store(true, Ordering::Relaxed);
        if let Some(t) = &torn_tail {
            shared.torn_tails.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                offset = t.offset,
                bytes = t.bytes,
                quarantined_to = %t.quarantined_to.display(),
                "audit spool had a torn tail; the records before it are kept and replayed"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stream_id = StreamId::new();
        let writer = Writer {
            conns: Connections::new(
                pool,
                config.max_in_flight,
                config.acquire_timeout,
                config.db_timeout,
            ),
            rx,
            shared: Arc::clone(&shared),
            chain: ChainState::new(stream_id),
            stream: Some(StreamRecord {
                stream_id,
                instance_id: config.instance_id.clone(),
                started_at: Utc::now().trunc_subsecs(6),
            }),
            spool,
            config,
            last_partition_check: None,
            in_flight: VecDeque::new(),
        };
        writer.publish_spool();
        let task = tokio::spawn(writer.run());
        Ok(SpawnedWriter {
            handle: AuditHandle {
                tx,
                shared,
                stream_id,
            },
            task,
            torn_tail,
        })
    }
}

struct Writer {
    conns: Connections,
    rx: mpsc::UnboundedReceiver<Item>,
    shared: Arc<Shared>,
    chain: ChainState,
    /// The stream's start record, until it is persisted with the first batch.
    stream: Option<StreamRecord>,
    spool: Spool,
    config: WriterConfig,
    last_partition_check: Option<Instant>,
    /// Batches being stored in the background, oldest first.
    in_flight: VecDeque<InFlight>,
}

/// A batch handed to a background insert.
struct InFlight {
    records: Arc<Vec<Record>>,
    acks: Vec<oneshot::Sender<()>>,
    /// The insert's result, set before the writer is woken. Why not the
    /// task's own output: a task that wakes the writer and then returns is
    /// not yet `is_finished` when the writer looks, and the writer then
    /// slept until its next batch deadline (50 ms) with callers waiting.
    outcome: Arc<std::sync::Mutex<Option<Result<(), AuditError>>>>,
    task: JoinHandle<()>,
}

impl InFlight {
    fn is_done(&self) -> bool {
        lock(&self.outcome).is_some()
    }
}

/// The lock even if a holder panicked: the slot is a plain value.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const PARTITION_CHECK_EVERY: Duration = Duration::from_secs(3600);

impl Writer {
    async fn run(mut self) {
        let mut pending = Batch::default();
        let mut waiters: Vec<oneshot::Sender<FlushReport>> = Vec::new();
        let mut shutdown: Option<oneshot::Sender<FlushReport>> = None;
        let mut closed = false;
        loop {
            if pending.is_empty() && !closed {
                closed = self
                    .collect(&mut pending, &mut waiters, &mut shutdown)
                    .await;
            }
            self.settle_finished(&mut pending).await;
            if !pending.is_empty() {
                if self.can_dispatch() {
                    // Pipelined: the next batch is sealed while this one is stored.
                    while self.in_flight.len() >= self.config.max_in_flight.max(1) {
                        self.settle_oldest(&mut pending).await;
                    }
                    if self.can_dispatch() {
                        self.dispatch(std::mem::take(&mut pending));
                    }
                }
                if !pending.is_empty() {
                    // Spool or outage path: earlier batches settle first so
                    // the spool keeps the stream's order.
                    self.settle_all(&mut pending).await;
                    if self.persist(&pending.records).await {
                        std::mem::take(&mut pending).acknowledge();
                    }
                }
            }
            self.housekeeping().await;
            if !self.spool.is_empty() {
                self.settle_all(&mut pending).await;
                self.replay_chunk().await;
            }
            if !waiters.is_empty() || closed {
                self.settle_all(&mut pending).await;
            }
            let stalled = !pending.is_empty();
            self.shared.stalled.store(stalled, Ordering::Relaxed);
            self.publish_spool();
            if !stalled && !waiters.is_empty() {
                // Flushing is a good moment to drain the spool completely.
                while !self.spool.is_empty() && self.database_up() {
                    if !self.replay_chunk().await {
                        break;
                    }
                }
                self.publish_spool();
                let report = self.report();
                for w in waiters.drain(..) {
                    let _ = w.send(report);
                }
            }
            if closed && !stalled {
                while !self.spool.is_empty() && self.database_up() {
                    if !self.replay_chunk().await {
                        break;
                    }
                }
                self.publish_spool();
                self.shared.closed.store(true, Ordering::Relaxed);
                if let Some(s) = shutdown.take() {
                    let _ = s.send(self.report());
                }
                return;
            }
            if stalled {
                tokio::time::sleep(self.config.retry_interval).await;
            }
        }
    }

    /// True when a batch may go straight to PostgreSQL in the background.
    fn can_dispatch(&self) -> bool {
        self.spool.is_empty() && self.database_up()
    }

    /// Starts storing `batch` on a task of its own.
    fn dispatch(&mut self, batch: Batch) {
        let records = Arc::new(batch.records);
        let outcome = Arc::new(std::sync::Mutex::new(None));
        let (conns, stored, shared, slot) = (
            self.conns.clone(),
            Arc::clone(&records),
            Arc::clone(&self.shared),
            Arc::clone(&outcome),
        );
        let task = tokio::spawn(async move {
            let result = conns.store(&stored).await;
            *lock(&slot) = Some(result);
            // Wake the writer to settle this batch now: callers may be
            // waiting for it to be durable.
            shared.wake.notify_one();
        });
        self.in_flight.push_back(InFlight {
            records,
            acks: batch.acks,
            outcome,
            task,
        });
    }

    /// Settles the in-flight batches that have already finished, oldest first.
    async fn settle_finished(&mut self, pending: &mut Batch) {
        while self.in_flight.front().is_some_and(InFlight::is_done) {
            self.settle_oldest(pending).await;
        }
    }

    /// Waits for every in-flight batch.
    async fn settle_all(&mut self, pending: &mut Batch) {
        while !self.in_flight.is_empty() {
            self.settle_oldest(pending).await;
        }
    }

    /// Waits for the oldest in-flight batch. A failed one goes to the spool;
    /// if even that fails it goes back to the front of `pending` to be retried.
    async fn settle_oldest(&mut self, pending: &mut Batch) {
        let Some(flight) = self.in_flight.pop_front() else {
            return;
        };
        let joined = flight.task.await;
        let outcome = lock(&flight.outcome).take();
        // No outcome: the task panicked or was cancelled before it had one.
        let result = outcome.unwrap_or_else(|| {
            let why = joined
                .err()
                .map_or_else(|| "no result".to_owned(), |e| e.to_string());
            Err(AuditError::Io(std::io::Error::other(why)))
        });
        let batch = Batch {
            records: Arc::unwrap_or_clone(flight.records),
            acks: flight.acks,
        };
        match result {
            Ok(()) => {
                self.shared.database_up.store(true, Ordering::Relaxed);
                self.shared
                    .events_written
                    .fetch_add(count_events(&batch.records), Ordering::Relaxed);
                batch.acknowledge();
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit database write failed; spooling");
                self.mark_down();
                if self.spool_append(&batch.records) {
                    batch.acknowledge();
                } else {
                    pending.put_back(batch);
                }
            }
        }
    }

    fn report(&self) -> FlushReport {
        FlushReport {
            in_database: self.spool.is_empty(),
            spooled: self.spool.pending(),
        }
    }

    fn database_up(&self) -> bool {
        self.shared.database_up.load(Ordering::Relaxed)
    }

    /// Gathers one batch; returns true when the writer should stop.
    async fn collect(
        &mut self,
        pending: &mut Batch,
        waiters: &mut Vec<oneshot::Sender<FlushReport>>,
        shutdown: &mut Option<oneshot::Sender<FlushReport>>,
    ) -> bool {
        let idle = if !self.in_flight.is_empty() {
            // Come back soon to settle the batches being stored.
            self.config.batch_interval
        } else if self.spool.is_empty() {
            Duration::from_secs(1)
        } else if self.database_up() {
            Duration::ZERO
        } else {
            self.config.retry_interval
        };
        let first = tokio::select! {
            item = self.rx.recv() => item,
            () = self.shared.wake.notified() => return false,
            () = tokio::time::sleep(idle) => return false,
        };
        let Some(first) = first else { return true };
        let mut events = 0usize;
        if self.take(first, pending, waiters, shutdown, &mut events) {
            return shutdown.is_some();
        }
        let deadline = tokio::time::Instant::now() + self.config.batch_interval;
        let mut buf = Vec::with_capacity(self.config.batch_size);
        while events < self.config.batch_size {
            // Group commit: a caller waits for this batch, so it goes as
            // soon as nothing more is queued rather than at the deadline.
            if !pending.acks.is_empty() && self.rx.is_empty() {
                break;
            }
            let limit = self.config.batch_size - events;
            let got = tokio::time::timeout_at(deadline, self.rx.recv_many(&mut buf, limit)).await;
            match got {
                Err(_) => break,
                Ok(0) => return true,
                Ok(_) => {
                    for item in buf.drain(..) {
                        if self.take(item, pending, waiters, shutdown, &mut events) {
                            return shutdown.is_some();
                        }
                    }
                }
            }
        }
        false
    }

    /// Adds one item to the batch; returns true when the batch must end now.
    fn take(
        &mut self,
        item: Item,
        pending: &mut Batch,
        waiters: &mut Vec<oneshot::Sender<FlushReport>>,
        shutdown: &mut Option<oneshot::Sender<FlushReport>>,
        events: &mut usize,
    ) -> bool {
        match item {
            Item::Event(event, ack) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                let event_id = event.event_id;
                match self.chain.seal(*event) {
                    Ok(sealed) => {
                        if let Some(stream) = self.stream.take() {
                            pending.records.push(Record::Stream(stream));
                        }
                        pending.records.push(Record::Event(Box::new(sealed)));
                        pending.acks.extend(ack);
                        *events += 1;
                    }
                    Err(e) => {
                        tracing::error!(%event_id, error = %e, "audit event could not be serialised")
                    }
                }
                false
            }
            Item::Policy(p) => {
                pending.records.push(Record::Policy(p));
                false
            }
            Item::Flush(w) => {
                waiters.push(w);
                true
            }
            Item::Shutdown(s) => {
                *shutdown = Some(s);
                true
            }
        }
    }

    /// Stores a batch in PostgreSQL, or in the spool; false if neither worked.
    async fn persist(&mut self, records: &[Record]) -> bool {
        let events = count_events(records);
        // While the spool holds older records, new ones queue behind them so
        // replay keeps the stream's order.
        if self.spool.is_empty() && self.database_up() {
            match self.db_insert(records).await {
                Ok(()) => {
                    self.shared
                        .events_written
                        .fetch_add(events, Ordering::Relaxed);
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "audit database write failed; spooling"),
            }
        }
        self.spool_append(records)
    }

    /// Appends a batch to the spool; false if that failed.
    fn spool_append(&mut self, records: &[Record]) -> bool {
        match self.spool.append(records) {
            Ok(()) => {
                self.shared.spool_failed.store(false, Ordering::Relaxed);
                self.shared
                    .events_spooled
                    .fetch_add(count_events(records), Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.shared.spool_failed.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, path = %self.spool.path().display(), "audit spool write failed");
                false
            }
        }
    }

    /// Replays one chunk of the spool if the database is up; true on progress.
    async fn replay_chunk(&mut self) -> bool {
        if self.spool.is_empty() || !self.database_up() {
            return false;
        }
        let (records, next) = match self.spool.read_chunk(self.config.replay_chunk) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, path = %self.spool.path().display(), "audit spool unreadable");
                self.shared.spool_failed.store(true, Ordering::Relaxed);
                return false;
            }
        };
        match self.db_insert(&records).await {
            Ok(()) => {
                self.shared
                    .events_written
                    .fetch_add(count_events(&records), Ordering::Relaxed);
                if let Err(e) = self.spool.advance(next, records.len() as u64) {
                    tracing::error!(error = %e, "audit spool could not be truncated after replay");
                    self.shared.spool_failed.store(true, Ordering::Relaxed);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit spool replay failed");
                false
            }
        }
    }

    async fn db_insert(&mut self, records: &[Record]) -> Result<(), AuditError> {
        let result = self.conns.store(records).await;
        match &result {
            Ok(()) => self.shared.database_up.store(true, Ordering::Relaxed),
            Err(_) => self.mark_down(),
        }
        result
    }

    /// Records the outage and starts a background probe that flips the flag
    /// back when PostgreSQL answers, so the writer never blocks on a dead one.
    fn mark_down(&self) {
        self.conns.forget_idle();
        self.shared.database_errors.fetch_add(1, Ordering::Relaxed);
        self.shared.database_up.store(false, Ordering::Relaxed);
        if self.shared.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.conns.pool().clone();
        let shared = Arc::clone(&self.shared);
        let every = self.config.retry_interval;
        let timeout = self.config.db_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if shared.closed.load(Ordering::Relaxed) {
                    break;
                }
                let ping =
                    tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&pool)).await;
                if matches!(ping, Ok(Ok(_))) {
                    shared.database_up.store(true, Ordering::Relaxed);
                    shared.wake.notify_one();
                    break;
                }
            }
            shared.probing.store(false, Ordering::Release);
        });
    }

    async fn housekeeping(&mut self) {
        let due = self
            .last_partition_check
            .is_none_or(|t| t.elapsed() >= PARTITION_CHECK_EVERY);
        if !due || !self.database_up() {
            return;
        }
        // On the writer's own connections: a pool acquire would retry a
        // refused connect for the pool's whole timeout with callers waiting.
        let call = async {
            let mut conn = self.conns.take().await?;
            let created =
                ensure_partitions(&mut conn, Utc::now(), self.config.partitions_ahead).await?;
            self.conns.give_back(conn);
            Ok::<_, AuditError>(created)
        };
        match tokio::time::timeout(self.config.db_timeout, call).await {
            Ok(Ok(_)) => self.last_partition_check = Some(Instant::now()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit partitions could not be ensured");
                if is_connectivity(&e) {
                    self.mark_down();
                } else {
                    // Not an outage (e.g. migrations missing): retry later, keep writing.
                    self.last_partition_check = Some(Instant::now());
                }
            }
            Err(_) => self.mark_down(),
        }
    }

    fn publish_spool(&self) {
        let s = &self.shared;
        s.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
        s.spool_records
            .store(self.spool.pending(), Ordering::Relaxed);
        let oldest = if self.spool.is_empty() {
            0
        } else {
            self.spool
                .oldest()
                .map_or_else(|| Utc::now().timestamp_micros(), |t| t.timestamp_micros())
        };
        s.spool_oldest_us.store(oldest, Ordering::Relaxed);
    }
}

fn count_events(records: &[Record]) -> u64 {
    records
        .iter()
        .filter(|r| matches!(r, Record::Event(_)))
        .count() as u64
}

/// True for errors that mean "PostgreSQL is not reachable right now".
fn is_connectivity(e: &AuditError) -> bool {
    matches!(
        e,
        AuditError::Database(
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
        )
    )
}
