//! The SQLite API-key queries (`api_keys`, migration 0004). Writes go through the writer
//! like every other; reads use the read pool.

use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};

use crate::access::KeyRecord;
use crate::store::StoreError;
use crate::store::keys::{KEY_COLUMNS, KeyColumns};
use crate::task::Millis;

fn key_row(row: &Row<'_>) -> rusqlite::Result<KeyColumns> {
    Ok(KeyColumns {
        hash: row.get(0)?,
        name: row.get(1)?,
        scopes: row.get(2)?,
        queues: row.get(3)?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

pub fn key_insert(conn: &Connection, key: &KeyRecord) -> Result<(), StoreError> {
    let inserted = conn.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            key.hash,
            key.name,
            key.scopes.to_string(),
            key.queues.to_list(),
            key.created_at,
            key.last_used_at,
            key.expires_at,
            key.revoked_at,
        ],
    );
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(error, _))
            if error.code == ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::KeyNameTaken(key.name.clone()))
        }
        Err(error) => Err(error.into()),
    }
}

pub fn keys(conn: &Connection) -> Result<Vec<KeyRecord>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, name"
    ))?;
    let rows = statement.query_map([], key_row)?;
    rows.map(|row| row?.into_record()).collect()
}

pub fn key_by_hash(conn: &Connection, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
    ))?
    .query_row([hash], key_row)
    .optional()?
    .map(KeyColumns::into_record)
    .transpose()
}

pub fn key_revoke(conn: &Connection, name: &str, at: Millis) -> Result<bool, StoreError> {
    let revoked = conn.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, at],
    )?;
    Ok(revoked > 0)
}

pub fn keys_exist(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys)")?
        .query_row([], |row| row.get(0))?)
}

pub fn key_used(conn: &Connection, hash: &str, at: Millis) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE api_keys SET last_used_at = ?2 \
         WHERE hash = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        params![hash, at],
    )?;
    Ok(())
}
