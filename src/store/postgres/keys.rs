//! The PostgreSQL API-key queries (`api_keys`, migration 0004). Every node reads the same
//! rows, so a key created or revoked through any node (or `taskd keys`) holds on all of them
//! once their caches expire.

use sqlx::{PgConnection, Row};

use crate::access::KeyRecord;
use crate::store::StoreError;
use crate::store::keys::{KEY_COLUMNS, KeyColumns};
use crate::task::Millis;

/// PostgreSQL's SQLSTATE for a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

fn key_row(row: &sqlx::postgres::PgRow) -> Result<KeyRecord, StoreError> {
    KeyColumns {
        hash: row.try_get(0)?,
        name: row.try_get(1)?,
        scopes: row.try_get(2)?,
        queues: row.try_get(3)?,
        created_at: row.try_get(4)?,
        last_used_at: row.try_get(5)?,
        expires_at: row.try_get(6)?,
        revoked_at: row.try_get(7)?,
    }
    .into_record()
}

pub async fn key_insert(conn: &mut PgConnection, key: &KeyRecord) -> Result<(), StoreError> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&key.hash)
    .bind(&key.name)
    .bind(key.scopes.to_string())
    .bind(key.queues.to_list())
    .bind(key.created_at)
    .bind(key.last_used_at)
    .bind(key.expires_at)
    .bind(key.revoked_at)
    .execute(conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            Err(StoreError::KeyNameTaken(key.name.clone()))
        }
        Err(error) => Err(error.into()),
    }
}

pub async fn keys(conn: &mut PgConnection) -> Result<Vec<KeyRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, name"
    ))
    .fetch_all(conn)
    .await?
    .iter()
    .map(key_row)
    .collect()
}

pub async fn key_by_hash(
    conn: &mut PgConnection,
    hash: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1"
    ))
    .bind(hash)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(key_row)
    .transpose()
}

pub async fn key_revoke(
    conn: &mut PgConnection,
    name: &str,
    at: Millis,
) -> Result<bool, StoreError> {
    let revoked =
        sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .bind(at)
            .execute(conn)
            .await?;
    Ok(revoked.rows_affected() > 0)
}

pub async fn keys_exist(conn: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
        .fetch_one(conn)
        .await?)
}

pub async fn key_used(conn: &mut PgConnection, hash: &str, at: Millis) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $2 \
         WHERE hash = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
    )
    .bind(hash)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}
