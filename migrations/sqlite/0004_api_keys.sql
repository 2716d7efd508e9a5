-- 0004: API keys. A key is stored as the SHA-256 of its secret, never the secret itself, so a
-- copy of the database (a backup, a stolen file) grants nothing. The secret is shown once, by
-- `taskd keys create`.
--
-- Rows are kept after a revoke (revoked_at set) so `taskd keys list --all` can show what
-- existed and when it ended; a name is unique among the keys not revoked, so a name can be
-- reused after its key is revoked. Once any row exists, every route but the open ones needs
-- a key, even when every key is revoked or expired: revoking the last key locks the door, it
-- never opens it.

CREATE TABLE api_keys (
    hash         TEXT    PRIMARY KEY,        -- hex SHA-256 of the secret
    name         TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    scopes       TEXT    NOT NULL CHECK (scopes <> ''),   -- `read,submit`
    queues       TEXT,                       -- `reports,tenant-a-*`; NULL: every queue
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,                    -- written at most once a minute per key
    expires_at   INTEGER,
    revoked_at   INTEGER
) WITHOUT ROWID;

CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
