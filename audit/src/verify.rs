//! Recomputing every stream's hash chain.

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

use crate::canonical::Hash32;
use crate::error::AuditError;
use crate::ids::StreamId;
use crate::rows::{event_columns, event_from_row};

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Streams checked.
    pub streams: u64,
    /// Events checked.
    pub events: u64,
    /// Streams whose verification started from a retention checkpoint.
    pub from_checkpoints: u64,
    /// The first break of each broken stream, by stream id.
    pub breaks: Vec<ChainBreak>,
}

impl VerifyReport {
    /// True when every chain is intact.
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// The first problem found in one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainBreak {
    /// The stream.
    pub stream_id: StreamId,
    /// What is wrong.
    #[serde(flatten)]
    pub problem: ChainProblem,
}

/// Kinds of chain breaks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainProblem {
    /// The event's stored content no longer matches its hash (or its indexed
    /// columns no longer match its body).
    Changed {
        /// The changed event.
        event_id: Uuid,
        /// Its sequence number.
        seq: i64,
        /// What differs.
        detail: String,
    },
    /// One or more events before `next_event_id` are gone.
    Missing {
        /// The first sequence number that is missing.
        expected_seq: i64,
        /// The event that follows the gap, if any.
        next_event_id: Option<Uuid>,
        /// Its sequence number.
        next_seq: Option<i64>,
    },
    /// The event sits at the wrong place: it links to an event that now
    /// comes after it.
    Reordered {
        /// The misplaced event.
        event_id: Uuid,
        /// The position it now holds.
        seq: i64,
    },
}

struct StreamState {
    stream_id: Uuid,
    /// Events at or below this sequence number were pruned.
    floor: i64,
    expected_seq: i64,
    prev_hash: Hash32,
    broken: bool,
}

/// Recomputes every stream's chain from its first event (or from the
/// retention checkpoint that replaced its pruned prefix) and reports the
/// first changed, missing or reordered event of each broken stream.
pub async fn verify(pool: &PgPool) -> Result<VerifyReport, AuditError> {
    let checkpoints: HashMap<Uuid, (i64, Hash32)> = sqlx::query(
        "SELECT DISTINCT ON (stream_id) stream_id, seq, hash FROM audit_checkpoints \
         ORDER BY stream_id, seq DESC",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| {
        let hash: Vec<u8> = row.try_get("hash")?;
        Ok((
            row.try_get("stream_id")?,
            (
                row.try_get("seq")?,
                Hash32::from_slice(&hash).unwrap_or_default(),
            ),
        ))
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let registered: Vec<Uuid> =
        sqlx::query_scalar("SELECT stream_id FROM audit_streams ORDER BY stream_id")
            .fetch_all(pool)
            .await?;

    let mut report = VerifyReport {
        streams: 0,
        events: 0,
        from_checkpoints: 0,
        breaks: Vec::new(),
    };
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut state: Option<StreamState> = None;
    let sql = concat!(
        "SELECT ",
        event_columns!(),
        " FROM audit_events ORDER BY stream_id, seq, recorded_at"
    );
    let mut rows = sqlx::query(sql).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let stream_id: Uuid = row.try_get("stream_id")?;
        let seq: i64 = row.try_get("seq")?;
        let event_id: Uuid = row.try_get("event_id")?;
        if state.as_ref().is_none_or(|s| s.stream_id != stream_id) {
            seen.insert(stream_id);
            report.streams += 1;
            let (floor, prev_hash) = match checkpoints.get(&stream_id) {
                Some(&(seq, hash)) => {
                    report.from_checkpoints += 1;
                    (seq, hash)
                }
                None => (0, Hash32::GENESIS),
            };
            state = Some(StreamState {
                stream_id,
                floor,
                expected_seq: floor + 1,
                prev_hash,
                broken: false,
            });
        }
        let st = state.as_mut().expect("set above");
        if seq <= st.floor {
            continue; // pruned range; covered by the checkpoint
        }
        report.events += 1;
        if st.broken {
            continue;
        }
        let problem = check_link(pool, &row, st, event_id, seq).await?;
        match problem {
            Some(problem) => {
                st.broken = true;
                report.breaks.push(ChainBreak {
                    stream_id: StreamId(stream_id),
                    problem,
                });
            }
            None => {
                let hash: Vec<u8> = row.try_get("hash")?;
                st.prev_hash = Hash32::from_slice(&hash).unwrap_or_default();
                st.expected_seq += 1;
            }
        }
    }
    drop(rows);

    for stream_id in registered {
        if !seen.contains(&stream_id) && !checkpoints.contains_key(&stream_id) {
            report.streams += 1;
            report.breaks.push(ChainBreak {
                stream_id: StreamId(stream_id),
                problem: ChainProblem::Missing {
                    expected_seq: 1,
                    next_event_id: None,
                    next_seq: None,
                },
            });
        }
    }
    report.breaks.sort_by_key(|b| b.stream_id);
    Ok(report)
}

async fn check_link(
    pool: &PgPool,
    row: &sqlx::postgres::PgRow,
    st: &StreamState,
    event_id: Uuid,
    seq: i64,
) -> Result<Option<ChainProblem>, AuditError> {
    let changed = |detail: &str| {
        Some(ChainProblem::Changed {
            event_id,
            seq,
            detail: detail.to_owned(),
        })
    };
    if seq > st.expected_seq {
        return Ok(Some(ChainProblem::Missing {
            expected_seq: st.expected_seq,
            next_event_id: Some(event_id),
            next_seq: Some(seq),
        }));
    }
    if seq < st.expected_seq {
        return Ok(changed("duplicate sequence number"));
    }
    let event = match event_from_row(row) {
        Ok(e) => e,
        Err(AuditError::Malformed { reason, .. }) => return Ok(changed(&reason)),
        Err(e) => return Err(e),
    };
    let content_intact = event.compute_hash() == event.hash;
    if event.prev_hash != st.prev_hash {
        let linked: Option<Uuid> = sqlx::query_scalar(
            "SELECT event_id FROM audit_events WHERE stream_id = $1 AND hash = $2 AND event_id <> $3 LIMIT 1",
        )
        .bind(st.stream_id)
        .bind(event.prev_hash.0.to_vec())
        .bind(event_id)
        .fetch_optional(pool)
        .await?;
        return Ok(if linked.is_some() {
            Some(ChainProblem::Reordered { event_id, seq })
        } else if content_intact {
            // Authentic event whose predecessor is gone (removed and renumbered).
            Some(ChainProblem::Missing {
                expected_seq: seq,
                next_event_id: Some(event_id),
                next_seq: Some(seq),
            })
        } else {
            changed("previous-hash link altered")
        });
    }
    if !content_intact {
        return Ok(changed("content does not match its hash"));
    }
    match event.derived_index() {
        Ok(index) if index == event.index => Ok(None),
        Ok(_) => Ok(changed("indexed columns disagree with the body")),
        Err(_) => Ok(changed("body is not a valid event")),
    }
}
