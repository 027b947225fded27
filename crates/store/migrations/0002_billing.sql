-- Prepaid billing. Money is integer nano-USD (1 USD = 1e9); prices are nano-USD per
-- 1,000,000 tokens. Booleans are 0/1 BIGINTs so that both databases read them alike.

CREATE TABLE serverless_pricing (
    id                 TEXT PRIMARY KEY,
    model              TEXT NOT NULL,
    name               TEXT NOT NULL DEFAULT '',
    input_per_mtok     BIGINT NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok    BIGINT NOT NULL CHECK (output_per_mtok >= 0),
    cached_per_mtok    BIGINT NOT NULL CHECK (cached_per_mtok >= 0),
    is_active          BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX serverless_pricing_by_model ON serverless_pricing (model);

-- One prepaid account per user. `held` is money reserved by gateways for requests in
-- flight (in leases, see the gateway crate); the database itself refuses an overdraft.
CREATE TABLE accounts (
    user_id       TEXT PRIMARY KEY REFERENCES users (id),
    balance_nanos BIGINT NOT NULL DEFAULT 0,
    held_nanos    BIGINT NOT NULL DEFAULT 0,
    CHECK (held_nanos >= 0),
    CHECK (balance_nanos - held_nanos >= 0)
);

-- Money put into an account (top-ups, grants). Rows are never updated or deleted. A
-- retried request with the same idempotency key finds its row (and the body fingerprint
-- that must match) instead of crediting twice.
CREATE TABLE ledger_entries (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id),
    amount_nanos        BIGINT NOT NULL CHECK (amount_nanos > 0),
    kind                TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    idempotency_key     TEXT UNIQUE,
    fingerprint         TEXT NOT NULL DEFAULT '',
    balance_after_nanos BIGINT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX ledger_entries_by_user ON ledger_entries (user_id, created_at);

-- One row per served request: what it used and what it cost. It is also the charge: a
-- balance is its credits minus the sum of its usage costs. Never updated or deleted.
CREATE TABLE usage_records (
    request_id         TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id),
    api_key_id         TEXT NOT NULL,
    model              TEXT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost_nanos         BIGINT NOT NULL CHECK (cost_nanos >= 0),
    cache_saving_nanos BIGINT NOT NULL,
    status             TEXT NOT NULL,
    started_at         BIGINT NOT NULL,
    finished_at        BIGINT NOT NULL
);
CREATE INDEX usage_records_by_user ON usage_records (user_id, finished_at);

-- Per-user rate limits; NULL keeps the server default.
CREATE TABLE rate_limits (
    user_id             TEXT PRIMARY KEY REFERENCES users (id),
    requests_per_minute BIGINT,
    tokens_per_minute   BIGINT
);
