-- 0004: API keys, as migrations/sqlite/0004_api_keys.sql in PostgreSQL's dialect (PostgreSQL
-- has no version 3: see that file of SQLite's). A key is stored as the SHA-256 of its secret,
-- never the secret itself; the secret is shown once, by `taskd keys create`.
--
-- Rows are kept after a revoke (revoked_at set); a name is unique among the keys not revoked.
-- Once any row exists, every route but the open ones needs a key, even when every key is
-- revoked or expired: revoking the last key locks the door, it never opens it.

CREATE TABLE api_keys (
    hash         text   PRIMARY KEY,         -- hex SHA-256 of the secret
    name         text   NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    scopes       text   NOT NULL CHECK (scopes <> ''),    -- `read,submit`
    queues       text,                       -- `reports,tenant-a-*`; NULL: every queue
    created_at   bigint NOT NULL,
    last_used_at bigint,                     -- written at most once a minute per key
    expires_at   bigint,
    revoked_at   bigint
);

CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
