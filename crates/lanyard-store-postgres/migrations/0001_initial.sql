-- Lanyard schema version 1.
--
-- Every sequence or number is bigint (64-bit); serials are the lower-case
-- hex text the server prints. Keys compared or ordered as text use the "C"
-- collation, so that lists come out in byte order whatever the database's
-- locale (as the sled backend lists them).

CREATE TABLE entries (
    id                 uuid PRIMARY KEY,
    spiffe_id          text COLLATE "C" NOT NULL,
    parent_id          text COLLATE "C" NOT NULL,
    selectors          text[] NOT NULL,
    x509_svid_ttl_secs bigint,
    dns_names          text[] NOT NULL,
    expires_at         bigint,
    hint               text NOT NULL,
    revision           bigint NOT NULL,
    created_at         bigint NOT NULL,
    jwt_svid_ttl_secs  bigint,
    -- SPIFFE ID, parent ID and the sorted selector set: no two entries share it.
    identity_key       text COLLATE "C" NOT NULL UNIQUE
);
CREATE INDEX entries_by_parent ON entries (parent_id);
CREATE INDEX entries_by_creation ON entries (created_at, id);

-- The entries that carry task grants (an entry may be linked before it exists).
CREATE TABLE task_entries (
    entry_id uuid PRIMARY KEY,
    task_id  text COLLATE "C" NOT NULL
);

CREATE TABLE agents (
    spiffe_id        text COLLATE "C" PRIMARY KEY,
    attestation_type text NOT NULL,
    selectors        text[] NOT NULL,
    serial           text COLLATE "C" NOT NULL,
    expires_at       bigint NOT NULL,
    attested_at      bigint NOT NULL,
    banned           boolean NOT NULL,
    evicted          boolean NOT NULL,
    revision         bigint NOT NULL
);

-- Only a digest of each token; a used token stays, with used_at set.
CREATE TABLE join_tokens (
    token_id   text COLLATE "C" PRIMARY KEY,
    expires_at bigint NOT NULL,
    created_at bigint NOT NULL,
    spiffe_id  text,
    used_at    bigint
);

CREATE TABLE svids (
    serial    text COLLATE "C" PRIMARY KEY,
    spiffe_id text NOT NULL,
    entry_id  uuid,
    agent_id  text COLLATE "C",
    task_id   text,
    issued_at bigint NOT NULL,
    not_after bigint NOT NULL
);
-- What the revocation sweeps scan.
CREATE INDEX svids_by_entry ON svids (entry_id) WHERE entry_id IS NOT NULL;
CREATE INDEX svids_by_agent ON svids (agent_id) WHERE agent_id IS NOT NULL;

CREATE TABLE revocations (
    serial     text COLLATE "C" PRIMARY KEY,
    revoked_at bigint NOT NULL,
    not_after  bigint NOT NULL,
    reason     text NOT NULL
);

-- Task grants, as JSON (their history is a list of transitions).
CREATE TABLE tasks (
    id     text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

-- One row: the CRL counter, the CA's journal and the audit head.
CREATE TABLE meta (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    crl_number bigint NOT NULL DEFAULT 0,
    ca_journal bytea,
    audit_seq  bigint,
    audit_hash text
);
INSERT INTO meta DEFAULT VALUES;
