//! Audit events, canonical hashing, the batching writer and queries.
