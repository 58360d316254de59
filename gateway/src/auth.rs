//! `Authorization: Bearer` keys: the admin key, keys configured by hash,
//! and keys in PostgreSQL (only their SHA-256 is stored anywhere).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The key's id (never the secret).
    pub key_id: String,
    /// Whether the key may use admin routes.
    pub admin: bool,
}

/// The caller of an admin route.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Caller);

type Digest32 = [u8; 32];

/// Checks keys.
pub struct Auth {
    admin: Option<Digest32>,
    fixed: Vec<(Digest32, Caller)>,
    db: Option<PgPool>,
    ttl: Duration,
    // Looking a key up in PostgreSQL on every request would cost more than
    // the rest of the request; a short memory keeps revocation prompt enough.
    cache: Mutex<HashMap<Digest32, (Caller, Instant)>>,
}

fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

fn decode_hex32(hex_text: &str) -> Option<Digest32> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

impl Auth {
    /// Keys from the configuration, and PostgreSQL if there is one.
    pub fn new(config: &AuthConfig, db: Option<PgPool>) -> Self {
        Self {
            admin: config.admin_key.as_deref().map(digest),
            fixed: config
                .static_keys
                .iter()
                .filter_map(|k| {
                    Some((
                        decode_hex32(&k.sha256)?,
                        Caller {
                            tenant: k.tenant.clone(),
                            key_id: k.id.clone(),
                            admin: false,
                        },
                    ))
                })
                .collect(),
            db,
            ttl: Duration::from_secs(config.cache_seconds),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller behind an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let header = header.ok_or(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <key>",
        ))?;
        let secret = match header.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => {
                return Err(ApiError::Unauthorized(
                    "the Authorization header must be `Bearer <key>`",
                ))
            }
        };
        if secret.is_empty() {
            return Err(ApiError::Unauthorized(
                "missing API key: send Authorization: Bearer <key>",
            ));
        }
        let d = digest(secret);
        if let Some(admin) = &self.admin {
            if bool::from(admin.ct_eq(&d)) {
                return Ok(Caller {
                    tenant: "admin".into(),
                    key_id: "admin".into(),
                    admin: true,
                });
            }
        }
        // Compare against every fixed key so timing says nothing about which matched.
        let mut found = None;
        for (k, caller) in &self.fixed {
            if bool::from(k.ct_eq(&d)) {
                found = Some(caller.clone());
            }
        }
        if let Some(c) = found {
            return Ok(c);
        }
        if !self.ttl.is_zero() {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((c, at)) = cache.get(&d) {
                if at.elapsed() < self.ttl {
                    return Ok(c.clone());
                }
            }
        }
        let Some(pool) = &self.db else {
            return Err(ApiError::Unauthorized("invalid API key"));
        };
        let info = warden_audit::authenticate(pool, secret)
            .await
            .map_err(|e| ApiError::Internal(format!("cannot check the API key: {e}")))?;
        let info = info.ok_or(ApiError::Unauthorized("invalid API key"))?;
        let caller = Caller {
            tenant: info.tenant.as_str().to_owned(),
            key_id: info.key_id.as_str().to_owned(),
            admin: info.admin,
        };
        if !self.ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(d, (caller.clone(), Instant::now()));
        }
        Ok(caller)
    }
}

type Fut<T> = Pin<Box<dyn Future<Output = Result<T, actix_web::Error>>>>;

fn header(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Fut<Self>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let header = header(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("no state".into()))?;
            Ok(state.auth.authenticate(header.as_deref()).await?)
        })
    }
}

impl FromRequest for AdminCaller {
    type Error = actix_web::Error;
    type Future = Fut<Self>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let caller = Caller::from_request(req, payload);
        Box::pin(async move {
            let caller = caller.await?;
            if caller.admin {
                Ok(AdminCaller(caller))
            } else {
                Err(ApiError::Forbidden.into())
            }
        })
    }
}
