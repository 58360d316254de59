//! Sealing events into a stream's hash chain, and recomputing hashes.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::canonical::{canonical_bytes, format_time, strip_nul, strip_nul_str, Hash32};
use crate::error::AuditError;
use crate::event::{AuditEvent, EventBody, IndexFields};
use crate::ids::{KeyId, PolicyRef, RequestId, StreamId, TenantId};

/// Version of the canonical record layout, part of every hash.
pub const CANONICAL_VERSION: u64 = 1;

/// An event with its place in a stream's chain: what is stored and spooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The writer stream.
    pub stream_id: StreamId,
    /// Position in the stream, from 1.
    pub seq: i64,
    /// When the writer sealed it; never decreases within a stream.
    pub recorded_at: DateTime<Utc>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Tenant.
    pub tenant_id: TenantId,
    /// API key id.
    pub key_id: Option<KeyId>,
    /// Request id.
    pub request_id: RequestId,
    /// Model or agent.
    pub model: Option<String>,
    /// Policy id and version.
    pub policy: Option<PolicyRef>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// The body as JSON (an [`EventBody`]).
    pub body: Value,
    /// Indexed columns derived from the body.
    #[serde(flatten)]
    pub index: IndexFields,
    /// Hash of the previous event of the stream ([`Hash32::GENESIS`] for seq 1).
    pub prev_hash: Hash32,
    /// SHA-256 of this event's canonical form.
    pub hash: Hash32,
}

impl SealedEvent {
    /// The canonical record whose bytes are hashed (every field but `hash`
    /// and the derived index columns).
    pub fn canonical_record(&self) -> Value {
        let mut m = Map::new();
        m.insert("v".into(), json!(CANONICAL_VERSION));
        m.insert("event_id".into(), json!(self.event_id.to_string()));
        m.insert("stream_id".into(), json!(self.stream_id.0.to_string()));
        m.insert("seq".into(), json!(self.seq));
        m.insert("recorded_at".into(), json!(format_time(&self.recorded_at)));
        m.insert("occurred_at".into(), json!(format_time(&self.occurred_at)));
        m.insert("tenant_id".into(), json!(self.tenant_id.as_str()));
        m.insert(
            "key_id".into(),
            json!(self.key_id.as_ref().map(KeyId::as_str)),
        );
        m.insert("request_id".into(), json!(self.request_id.as_str()));
        m.insert("model".into(), json!(self.model));
        m.insert(
            "policy_id".into(),
            json!(self.policy.as_ref().map(|p| &p.id)),
        );
        m.insert(
            "policy_version".into(),
            json!(self.policy.as_ref().map(|p| &p.version)),
        );
        m.insert("trace_id".into(), json!(self.trace_id));
        m.insert("body".into(), self.body.clone());
        m.insert("prev_hash".into(), json!(self.prev_hash.to_hex()));
        Value::Object(m)
    }

    /// SHA-256 of the canonical record.
    pub fn compute_hash(&self) -> Hash32 {
        Hash32::digest(&canonical_bytes(&self.canonical_record()))
    }

    /// The index columns the body implies, or why the body is not an event.
    pub fn derived_index(&self) -> Result<IndexFields, AuditError> {
        let body: EventBody =
            serde_json::from_value(self.body.clone()).map_err(|e| AuditError::Malformed {
                event_id: self.event_id,
                reason: format!("body: {e}"),
            })?;
        Ok(body.index_fields())
    }
}

/// The head of one writer stream: where the next event goes.
#[derive(Debug, Clone)]
pub struct ChainState {
    stream_id: StreamId,
    next_seq: i64,
    prev_hash: Hash32,
    last_recorded_at: Option<DateTime<Utc>>,
}

impl ChainState {
    /// A new, empty stream.
    pub fn new(stream_id: StreamId) -> Self {
        Self {
            stream_id,
            next_seq: 1,
            prev_hash: Hash32::GENESIS,
            last_recorded_at: None,
        }
    }

    /// The stream this chain belongs to.
    pub fn stream_id(&self) -> StreamId {
        self.stream_id
    }

    /// Appends `event` to the chain, recorded now.
    pub fn seal(&mut self, event: AuditEvent) -> Result<SealedEvent, AuditError> {
        self.seal_at(event, Utc::now())
    }

    /// Appends `event` to the chain as recorded at `now` (imports, tests).
    pub fn seal_at(
        &mut self,
        event: AuditEvent,
        now: DateTime<Utc>,
    ) -> Result<SealedEvent, AuditError> {
        let now = now.trunc_subsecs(6);
        // Monotonic per stream so retention's time cut-off is a prefix of the chain.
        let recorded_at = match self.last_recorded_at {
            Some(last) if last > now => last,
            _ => now,
        };
        let mut body = serde_json::to_value(&event.body)?;
        strip_nul(&mut body);
        let mut index = event.body.index_fields();
        index.categories.iter_mut().for_each(strip_nul_str);
        let ctx = &event.context;
        let clean = |s: &Option<String>| {
            s.clone().map(|mut s| {
                strip_nul_str(&mut s);
                s
            })
        };
        let policy = ctx.policy.as_ref().map(|p| {
            let mut p = p.clone();
            strip_nul_str(&mut p.id);
            strip_nul_str(&mut p.version);
            p
        });
        let mut sealed = SealedEvent {
            event_id: event.event_id,
            stream_id: self.stream_id,
            seq: self.next_seq,
            recorded_at,
            occurred_at: event.occurred_at.trunc_subsecs(6),
            tenant_id: ctx.tenant.clone(),
            key_id: ctx.key_id.clone(),
            request_id: ctx.request_id.clone(),
            model: clean(&ctx.model),
            policy,
            trace_id: clean(&ctx.trace_id),
            body,
            index,
            prev_hash: self.prev_hash,
            hash: Hash32::GENESIS,
        };
        sealed.hash = sealed.compute_hash();
        self.next_seq += 1;
        self.prev_hash = sealed.hash;
        self.last_recorded_at = Some(recorded_at);
        Ok(sealed)
    }
}
