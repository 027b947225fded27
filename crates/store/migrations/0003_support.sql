-- Support, the audit trail, billing addresses and products. Same conventions as 0001:
-- portable SQL, Unix milliseconds, text ids, JSON kept as text.

CREATE TABLE tickets (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),   -- the requester
    subject    TEXT NOT NULL,
    type       TEXT NOT NULL,                         -- TICKET_TYPE_*
    status     TEXT NOT NULL,                         -- TICKET_STATUS_*
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tickets_by_user ON tickets (user_id, created_at);
CREATE INDEX tickets_by_time ON tickets (created_at);

-- A ticket's conversation. The author's name and role are kept as they were when the
-- message was written.
CREATE TABLE ticket_messages (
    id          TEXT PRIMARY KEY,
    ticket_id   TEXT NOT NULL REFERENCES tickets (id),
    seq         BIGINT NOT NULL,
    author_id   TEXT NOT NULL REFERENCES users (id),
    author_name TEXT NOT NULL,
    author_role TEXT NOT NULL,
    content     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (ticket_id, seq)
);

CREATE TABLE reserved_deployment_requests (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    details    TEXT NOT NULL,                         -- JSON object, the fields as sent
    created_at BIGINT NOT NULL
);
CREATE INDEX reserved_deployment_requests_by_time ON reserved_deployment_requests (created_at);

-- The audit trail: written by the server for every state-changing action, never updated.
-- `user_id` is whose data the action touched (who may read the row), `actor_id` who did it.
CREATE TABLE activities (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    actor_type    TEXT NOT NULL,
    actor_id      TEXT NOT NULL,
    actor_display TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    description   TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',         -- JSON object
    occurred_at   BIGINT NOT NULL,
    recorded_at   BIGINT NOT NULL
);
CREATE INDEX activities_by_user ON activities (user_id, occurred_at);
CREATE INDEX activities_by_time ON activities (occurred_at);

CREATE TABLE billing_addresses (
    user_id     TEXT PRIMARY KEY REFERENCES users (id),
    name        TEXT NOT NULL DEFAULT '',
    company     TEXT NOT NULL DEFAULT '',
    line1       TEXT NOT NULL DEFAULT '',
    line2       TEXT NOT NULL DEFAULT '',
    city        TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL DEFAULT '',
    postal_code TEXT NOT NULL DEFAULT '',
    country     TEXT NOT NULL DEFAULT '',
    phone       TEXT NOT NULL DEFAULT '',
    updated_at  BIGINT NOT NULL
);

CREATE TABLE products (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL DEFAULT '',
    required_gpu_num BIGINT NOT NULL DEFAULT 0 CHECK (required_gpu_num >= 0),
    family           TEXT NOT NULL DEFAULT '',
    is_active        BIGINT NOT NULL DEFAULT 1,
    spec             TEXT NOT NULL DEFAULT '{}',      -- JSON object
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- Hourly prices of GPUs per cloud, for reserved and on-demand deployments.
CREATE TABLE gpu_pricing (
    gpu_type          TEXT NOT NULL,                  -- GPU_TYPE_*
    cloud_provider    TEXT NOT NULL,                  -- CLOUD_PROVIDER_*
    hourly_rate_nanos BIGINT NOT NULL CHECK (hourly_rate_nanos >= 0),
    is_active         BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (gpu_type, cloud_provider)
);

-- Deployments (the Control Plane's "models"): a user's named handle on a model this
-- installation serves. Deleting keeps the row (status MODEL_STATUS_DELETED).
CREATE TABLE deployments (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    model_name  TEXT NOT NULL,
    model_path  TEXT NOT NULL,                        -- the served model's id
    description TEXT NOT NULL DEFAULT '',
    model_spec  TEXT NOT NULL DEFAULT '{}',           -- JSON object
    infra       TEXT NOT NULL DEFAULT '{}',           -- JSON object
    gpu_count   BIGINT NOT NULL DEFAULT 0,
    gpu_type    TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE UNIQUE INDEX deployments_live_name ON deployments (user_id, model_name) WHERE deleted_at IS NULL;
CREATE INDEX deployments_by_time ON deployments (created_at);
