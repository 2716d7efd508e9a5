//! What both stores share about API keys: a row's columns read back as a [`KeyRecord`].
//! The SQL is each store's own (`sqlite/keys.rs`, `postgres/keys.rs`).

use std::str::FromStr;

use crate::access::{KeyRecord, QueueScope, Scopes};
use crate::store::StoreError;
use crate::task::Millis;

/// The columns of `api_keys`, in the order [`KeyColumns`] holds them.
pub const KEY_COLUMNS: &str =
    "hash, name, scopes, queues, created_at, last_used_at, expires_at, revoked_at";

/// One row of `api_keys` as stored.
pub struct KeyColumns {
    pub hash: String,
    pub name: String,
    pub scopes: String,
    pub queues: Option<String>,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

impl KeyColumns {
    pub fn into_record(self) -> Result<KeyRecord, StoreError> {
        let corrupt = |error: crate::access::AccessError| {
            StoreError::Corrupt(format!("key `{}`: {error}", self.name))
        };
        Ok(KeyRecord {
            scopes: Scopes::from_str(&self.scopes).map_err(corrupt)?,
            queues: QueueScope::parse_list(self.queues.as_deref().unwrap_or_default())
                .map_err(corrupt)?,
            hash: self.hash,
            name: self.name,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        })
    }
}
