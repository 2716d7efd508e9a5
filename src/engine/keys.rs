//! API keys as the engine serves them: creation for `taskd keys`, and the lookups behind
//! every authenticated request, cached briefly so a request costs no database read.
//!
//! The cache is why a revoke takes a moment: an entry lives [`KEY_CACHE_TTL`], so a key
//! revoked on any node (or with `taskd keys revoke`) is refused by every node within that
//! time. Unknown secrets are cached too (an attacker's guesses cost one read each per TTL),
//! and the cache is bounded: past [`MAX_CACHED`] entries it starts afresh.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{Engine, EngineError};
use crate::access::{self, KeyRecord, QueueScope, Scopes};
use crate::store::StoreError;
use crate::task::{Millis, now_millis};

/// How long a key looked up stays trusted before it is read again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// The most keys (known or not) the cache holds.
const MAX_CACHED: usize = 10_000;
/// `last_used_at` is written at most this often per key, not on every request.
const USED_EVERY: Duration = Duration::from_secs(60);

pub(super) struct KeyCache {
    /// By the secret's hash: the key (or `None`, unknown) and when it was read.
    entries: DashMap<String, (Option<KeyRecord>, Instant)>,
    /// Some key exists. Sticky: key rows are never deleted (a revoke keeps its row), so once
    /// true it stays true, and every request of a keyed server reads one atomic.
    exist: AtomicBool,
    /// When a read last found no key, in ms since `born`; -1 before the first read. Atomics,
    /// not a lock: an open server asks on every request.
    none_at_ms: AtomicI64,
    born: Instant,
    /// When each key's `last_used_at` was last written by this node.
    used: DashMap<String, Instant>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            entries: DashMap::new(),
            exist: AtomicBool::new(false),
            none_at_ms: AtomicI64::new(-1),
            born: Instant::now(),
            used: DashMap::new(),
        }
    }
}

/// What `taskd keys create` asks for.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scopes: Scopes,
    pub queues: QueueScope,
    pub expires_at: Option<Millis>,
}

impl Engine {
    /// Whether any key exists (so every guarded route needs one). Read at most once per TTL.
    pub async fn keys_exist(&self) -> Result<bool, EngineError> {
        let cache = &self.inner.keys;
        if cache.exist.load(Ordering::Acquire) {
            return Ok(true);
        }
        let now_ms = cache.born.elapsed().as_millis() as i64;
        let none_at = cache.none_at_ms.load(Ordering::Acquire);
        if none_at >= 0 && now_ms - none_at < KEY_CACHE_TTL.as_millis() as i64 {
            return Ok(false);
        }
        let exist = self
            .inner
            .store
            .keys_exist()
            .await
            .map_err(EngineError::Store)?;
        if exist {
            cache.exist.store(true, Ordering::Release);
        } else {
            cache.none_at_ms.store(now_ms, Ordering::Release);
        }
        Ok(exist)
    }

    /// The key a secret names, revoked or expired ones included (the caller decides), or
    /// `None` if no key has this secret.
    pub async fn key_for_secret(&self, secret: &str) -> Result<Option<KeyRecord>, EngineError> {
        let hash = access::hash_secret(secret);
        let cache = &self.inner.keys;
        let cached = cache
            .entries
            .get(&hash)
            .filter(|entry| entry.1.elapsed() < KEY_CACHE_TTL)
            .map(|entry| entry.0.clone());
        let key = match cached {
            Some(key) => key,
            None => {
                let key = self
                    .inner
                    .store
                    .key_by_hash(hash.clone())
                    .await
                    .map_err(EngineError::Store)?;
                if cache.entries.len() >= MAX_CACHED {
                    cache.entries.clear();
                }
                cache
                    .entries
                    .insert(hash.clone(), (key.clone(), Instant::now()));
                key
            }
        };
        // The row was found by its hash; the comparison again, in constant time, keeps the
        // answer independent of how much of a guess matched.
        Ok(key.filter(|key| access::constant_time_eq(key.hash.as_bytes(), hash.as_bytes())))
    }

    /// Notes that `key` served a request: writes `last_used_at` if this node has not for a
    /// minute, in the background (a request never waits for it).
    pub fn key_used(&self, key: &KeyRecord) {
        let cache = &self.inner.keys;
        let now = Instant::now();
        let due = cache
            .used
            .get(&key.hash)
            .is_none_or(|at| now.duration_since(*at) >= USED_EVERY);
        if !due {
            return;
        }
        if cache.used.len() >= MAX_CACHED {
            cache.used.clear();
        }
        cache.used.insert(key.hash.clone(), now);
        let store = std::sync::Arc::clone(&self.inner.store);
        let hash = key.hash.clone();
        tokio::spawn(async move {
            if let Err(error) = store.key_used(hash, now_millis()).await {
                tracing::warn!(%error, "cannot record a key's last use");
            }
        });
    }
}

/// Creates a key in the store and returns its secret, which exists nowhere else after this.
pub async fn create_key(
    store: &dyn crate::store::TaskStore,
    key: NewKey,
) -> Result<(String, KeyRecord), StoreError> {
    let secret = access::generate_secret()
        .map_err(|error| StoreError::backend(format!("no randomness for a secret: {error}")))?;
    let record = KeyRecord {
        name: key.name,
        hash: access::hash_secret(&secret),
        scopes: key.scopes,
        queues: key.queues,
        created_at: now_millis(),
        last_used_at: None,
        expires_at: key.expires_at,
        revoked_at: None,
    };
    store.key_insert(record.clone()).await?;
    Ok((secret, record))
}
