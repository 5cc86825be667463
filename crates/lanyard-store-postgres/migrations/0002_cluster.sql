-- Lanyard schema version 2: several servers on one database.
--
-- The CRL the trust domain publishes now (whichever server signed it), and
-- change notifications: every committed change to entries, agents, tasks,
-- the CA or the published CRL sends one NOTIFY on channel lanyard_changes,
-- delivered to every listening server when (and only if) the transaction
-- commits. Payloads: entry:<uuid>, agent:<spiffe id>, task:<id>, ca,
-- crl:<number>.

ALTER TABLE meta
    ADD COLUMN crl_published_number bigint,
    ADD COLUMN crl_der bytea;

CREATE FUNCTION lanyard_notify_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('lanyard_changes', 'entry:' || OLD.id::text);
    ELSE
        PERFORM pg_notify('lanyard_changes', 'entry:' || NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_notify AFTER INSERT OR UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_entry();

CREATE FUNCTION lanyard_notify_agent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('lanyard_changes', 'agent:' || OLD.spiffe_id);
    ELSE
        PERFORM pg_notify('lanyard_changes', 'agent:' || NEW.spiffe_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER agents_notify AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_agent();

CREATE FUNCTION lanyard_notify_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('lanyard_changes', 'task:' || OLD.id);
    ELSE
        PERFORM pg_notify('lanyard_changes', 'task:' || NEW.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_task();

CREATE FUNCTION lanyard_notify_meta() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ca_journal IS DISTINCT FROM OLD.ca_journal THEN
        PERFORM pg_notify('lanyard_changes', 'ca');
    END IF;
    IF NEW.crl_published_number IS DISTINCT FROM OLD.crl_published_number THEN
        PERFORM pg_notify('lanyard_changes', 'crl:' || NEW.crl_published_number::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER meta_notify AFTER UPDATE ON meta
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_meta();

-- The audit chain of every server sharing the database: one SHA-256 chain
-- whose order the database holds (an append locks the head first). Each
-- record is kept as its JSON line; the head is kept apart, so that a
-- dropped tail is detected.
CREATE TABLE audit_records (
    seq    bigint PRIMARY KEY,
    record text NOT NULL
);
ALTER TABLE meta
    ADD COLUMN audit_chain_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN audit_chain_hash text;
