-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are Unix milliseconds
-- (BIGINT), ids are text, "flags" are nullable timestamps (when it happened).

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,      -- stored lowercased
    password_hash   TEXT NOT NULL,             -- argon2id PHC string
    first_name      TEXT NOT NULL DEFAULT '',
    last_name       TEXT NOT NULL DEFAULT '',
    display_name    TEXT NOT NULL DEFAULT '',
    company         TEXT NOT NULL DEFAULT '',
    role            TEXT NOT NULL,
    tos_accepted_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- An API key is `<public id>_<secret>`; only the public id and a digest of the whole key
-- are kept, so the table never holds a usable key.
CREATE TABLE api_keys (
    public_id  TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL DEFAULT '',
    scopes     TEXT NOT NULL DEFAULT '[]',     -- JSON array of strings
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    deleted_at BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);

-- One signed-in CLI: an access token and a refresh token, rotated together on refresh.
CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id),
    access_id          TEXT NOT NULL UNIQUE,
    access_digest      TEXT NOT NULL,
    access_expires_at  BIGINT NOT NULL,
    refresh_id         TEXT NOT NULL UNIQUE,
    refresh_digest     TEXT NOT NULL,
    refresh_expires_at BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    revoked_at         BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Refresh tokens already rotated away: presenting one again means it was stolen, and the
-- whole session is revoked (RFC 9700 refresh-token rotation).
CREATE TABLE retired_refresh_tokens (
    refresh_id TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id)
);

-- The CLI browser login: `tm auth login` polls with the secret code while a person signs
-- in on the page and approves the request by its public id.
CREATE TABLE cli_logins (
    public_id  TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    state      TEXT NOT NULL,                  -- pending | approved | denied | consumed
    user_id    TEXT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
