//! Who may do what: the scopes of API keys, the queue patterns that fence a key into some
//! queues, and the keys' secrets.
//!
//! No HTTP and no SQL here. The store keeps [`KeyRecord`]s (hashed: a secret is never
//! stored), the api checks a caller's key and scope at its edge, and the engine narrows every
//! read and write it serves by the caller's [`QueueScope`], so no route can forget to.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::task::{Millis, QueueName};

/// What a key may do. `Admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Submit tasks (`POST /v1/tasks`, `/v1/tasks/batch`).
    Submit,
    /// Read tasks, results, lists, events, queues and kinds.
    Read,
    /// Cancel, retry and delete tasks.
    Manage,
    /// Lease, heartbeat, complete and fail tasks (remote workers).
    Work,
    /// Change queues, and everything the other scopes allow.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Submit,
        Scope::Read,
        Scope::Manage,
        Scope::Work,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Manage => "manage",
            Scope::Work => "work",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AccessError;

    fn from_str(text: &str) -> Result<Scope, AccessError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| AccessError::UnknownScope(text.to_owned()))
    }
}

/// A set of scopes, written as a comma-separated list (`read,submit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: what a caller of a server without keys may do.
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    /// Whether these scopes allow what `needed` guards (`admin` allows everything).
    pub fn allow(self, needed: Scope) -> bool {
        self.0 & (needed.bit() | Scope::Admin.bit()) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |scope| self.0 & scope.bit() != 0)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Scopes {
        Scopes(scopes.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Scopes {
    type Err = AccessError;

    /// A comma-separated list of at least one scope.
    fn from_str(list: &str) -> Result<Scopes, AccessError> {
        let scopes = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err(AccessError::NoScopes);
        }
        Ok(scopes.into_iter().collect())
    }
}

/// A queue name, or a prefix of names ending in `*` (`tenant-a-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePattern {
    prefix: String,
    wildcard: bool,
}

impl QueuePattern {
    pub fn matches(&self, queue: &QueueName) -> bool {
        if self.wildcard {
            queue.as_str().starts_with(&self.prefix)
        } else {
            queue.as_str() == self.prefix
        }
    }

    /// The fixed part of the pattern: the whole name, or what precedes the `*`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }
}

impl fmt::Display for QueuePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, if self.wildcard { "*" } else { "" })
    }
}

impl FromStr for QueuePattern {
    type Err = AccessError;

    fn from_str(text: &str) -> Result<QueuePattern, AccessError> {
        let (prefix, wildcard) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        // A bare `*` is every queue; anything else must read as (the start of) a queue name.
        let valid = (wildcard && prefix.is_empty()) || QueueName::parse(prefix).is_ok();
        if !valid {
            return Err(AccessError::BadQueuePattern(text.to_owned()));
        }
        Ok(QueuePattern {
            prefix: prefix.to_owned(),
            wildcard,
        })
    }
}

/// Which queues a caller may see and touch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QueueScope {
    /// Every queue.
    #[default]
    All,
    /// Only queues matching one of these patterns.
    Only(Vec<QueuePattern>),
}

impl QueueScope {
    pub fn allows(&self, queue: &QueueName) -> bool {
        match self {
            QueueScope::All => true,
            QueueScope::Only(patterns) => patterns.iter().any(|p| p.matches(queue)),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, QueueScope::All)
    }

    /// Parses a comma-separated list of patterns; an empty list is every queue.
    pub fn parse_list(list: &str) -> Result<QueueScope, AccessError> {
        let patterns = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(QueuePattern::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if patterns.is_empty() {
            QueueScope::All
        } else {
            QueueScope::Only(patterns)
        })
    }

    /// The comma-separated list, or `None` for every queue (as the store keeps it).
    pub fn to_list(&self) -> Option<String> {
        match self {
            QueueScope::All => None,
            QueueScope::Only(patterns) => Some(
                patterns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }
}

/// When requests must carry a key (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Keys are required once any key exists; with none, a server on loopback serves open
    /// (and warns) and one on another address refuses to start.
    #[default]
    Auto,
    /// Keys are always required, even before the first one exists.
    On,
    /// No key is ever asked for: for a network that already decides who reaches taskd.
    Off,
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(text: &str) -> Result<AuthMode, String> {
        match text {
            "auto" => Ok(AuthMode::Auto),
            "on" => Ok(AuthMode::On),
            "off" => Ok(AuthMode::Off),
            other => Err(format!("`{other}` is not one of auto, on, off")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("unknown scope `{0}` (scopes: submit, read, manage, work, admin)")]
    UnknownScope(String),
    #[error("name at least one scope (submit, read, manage, work, admin)")]
    NoScopes,
    #[error("`{0}` is not a queue name or a prefix ending in `*`")]
    BadQueuePattern(String),
    #[error("`{0}` is not a key name: 1 to 64 letters, digits, '_', '-' or '.'")]
    BadKeyName(String),
}

/// A key as the store keeps it: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Unique among the keys not revoked; what `keys revoke` and the logs name.
    pub name: String,
    /// The hex SHA-256 of the secret.
    pub hash: String,
    pub scopes: Scopes,
    pub queues: QueueScope,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// Why a known key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Expired,
    Revoked,
}

impl KeyRecord {
    /// Whether the key may be used at `now`, and if not, why.
    pub fn check(&self, now: Millis) -> Result<(), Unusable> {
        if self.revoked_at.is_some() {
            return Err(Unusable::Revoked);
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(Unusable::Expired);
        }
        Ok(())
    }
}

/// Checks a key name: the same characters as a queue name.
pub fn key_name(name: &str) -> Result<String, AccessError> {
    QueueName::parse(name)
        .map(|_| name.to_owned())
        .map_err(|_| AccessError::BadKeyName(name.to_owned()))
}

/// What every secret starts with, so a leaked one is recognisable (and scanners can find it).
pub const SECRET_PREFIX: &str = "tdk_";
/// Random bytes per secret: 192 bits, far beyond guessing.
const SECRET_BYTES: usize = 24;

/// A fresh secret from the operating system's random source: `tdk_` and 48 hex digits.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

/// The hex SHA-256 of a secret. A fast hash is enough: the secret has 192 random bits, so
/// there is nothing to brute-force, unlike a password.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two byte strings in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    #[test]
    fn admin_allows_everything_and_others_only_themselves() {
        let admin: Scopes = "admin".parse().unwrap();
        assert!(Scope::ALL.iter().all(|&s| admin.allow(s)));
        let reader: Scopes = "read, submit".parse().unwrap();
        assert!(reader.allow(Scope::Read) && reader.allow(Scope::Submit));
        assert!(!reader.allow(Scope::Manage) && !reader.allow(Scope::Admin));
        assert_eq!(reader.to_string(), "submit,read");
        assert_eq!("".parse::<Scopes>(), Err(AccessError::NoScopes));
        assert!(matches!(
            "read,root".parse::<Scopes>(),
            Err(AccessError::UnknownScope(s)) if s == "root"
        ));
    }

    #[test]
    fn queue_patterns_match_names_and_prefixes() {
        let scope = QueueScope::parse_list("reports, tenant-a-*").unwrap();
        assert!(scope.allows(&queue("reports")));
        assert!(scope.allows(&queue("tenant-a-mail")));
        assert!(!scope.allows(&queue("reports2")));
        assert!(!scope.allows(&queue("tenant-b-mail")));
        assert_eq!(scope.to_list().as_deref(), Some("reports,tenant-a-*"));
        assert_eq!(QueueScope::parse_list("").unwrap(), QueueScope::All);
        assert!(QueueScope::parse_list("*").unwrap().allows(&queue("any")));
        assert!("a b".parse::<QueuePattern>().is_err());
        assert!("a*b".parse::<QueuePattern>().is_err());
    }

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let (a, b) = (generate_secret().unwrap(), generate_secret().unwrap());
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == 4 + 48);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a).len(), 64);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc"));
    }

    #[test]
    fn revoked_and_expired_keys_are_unusable() {
        let mut key = KeyRecord {
            name: "k".into(),
            hash: hash_secret("x"),
            scopes: Scopes::all(),
            queues: QueueScope::All,
            created_at: 0,
            last_used_at: None,
            expires_at: Some(100),
            revoked_at: None,
        };
        assert_eq!(key.check(99), Ok(()));
        assert_eq!(key.check(100), Err(Unusable::Expired));
        key.revoked_at = Some(1);
        assert_eq!(key.check(0), Err(Unusable::Revoked));
    }
}
