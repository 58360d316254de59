//! API keys for the gateway's auth: only the SHA-256 of a key is stored.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::AuditError;
use crate::ids::{KeyId, TenantId};

/// Prefix of every key secret, so leaked keys are easy to recognise.
pub const KEY_PREFIX: &str = "wdn_";

/// A key just created; the secret is shown once and never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The key's id (safe to log and audit).
    pub key_id: KeyId,
    /// The bearer secret to hand to the caller.
    pub secret: String,
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub key_id: KeyId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Whether it may use admin routes.
    pub admin: bool,
    /// Free-text label.
    pub label: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// SHA-256 of a key secret, as stored.
pub fn key_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Creates a key for `tenant` (`warden keys create --tenant T`).
pub async fn create_api_key(
    pool: &PgPool,
    tenant: &TenantId,
    admin: bool,
    label: Option<&str>,
) -> Result<NewApiKey, AuditError> {
    // Two v4 UUIDs carry 244 bits from the operating system's RNG.
    let mut random = Vec::with_capacity(32);
    random.extend_from_slice(Uuid::new_v4().as_bytes());
    random.extend_from_slice(Uuid::new_v4().as_bytes());
    let secret = format!("{KEY_PREFIX}{}", hex::encode(random));
    let key_id = KeyId::new(format!(
        "key_{}",
        &Uuid::new_v4().simple().to_string()[..16]
    ))?;
    sqlx::query("INSERT INTO api_keys (key_id, tenant_id, key_sha256, admin, label) VALUES ($1, $2, $3, $4, $5)")
        .bind(key_id.as_str())
        .bind(tenant.as_str())
        .bind(key_digest(&secret).to_vec())
        .bind(admin)
        .bind(label)
        .execute(pool)
        .await?;
    Ok(NewApiKey { key_id, secret })
}

/// The live (not revoked) key whose secret this is, if any.
pub async fn authenticate(pool: &PgPool, secret: &str) -> Result<Option<ApiKeyInfo>, AuditError> {
    let row = sqlx::query(
        "SELECT key_id, tenant_id, admin, label, created_at, revoked_at FROM api_keys \
         WHERE key_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(key_digest(secret).to_vec())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

/// Revokes a key; false if it does not exist or was already revoked.
pub async fn revoke_api_key(pool: &PgPool, key_id: &KeyId) -> Result<bool, AuditError> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id.as_str())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The tenant's keys, newest first.
pub async fn list_api_keys(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Vec<ApiKeyInfo>, AuditError> {
    let rows = sqlx::query(
        "SELECT key_id, tenant_id, admin, label, created_at, revoked_at FROM api_keys \
         WHERE tenant_id = $1 ORDER BY created_at DESC, key_id",
    )
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(key_from_row).collect()
}

fn key_from_row(row: &PgRow) -> Result<ApiKeyInfo, AuditError> {
    Ok(ApiKeyInfo {
        key_id: KeyId::new(row.try_get::<String, _>("key_id")?)?,
        tenant: TenantId::new(row.try_get::<String, _>("tenant_id")?)?,
        admin: row.try_get("admin")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}
