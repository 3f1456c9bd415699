-- Every change to an address's entries queues the address in edge_pending, in the transaction that
-- makes it, so that a reconcile run soon after checks the address's KV key whatever became of
-- the request's own KV write: it failed, KV refused it (one write per key per second), or an older
-- write landed after it. Without this, such a key waited for the sweep over every address, which
-- takes days for a long list. `version` counts the changes since the address was queued, so that
-- a run takes an address off the queue only if nothing changed it after the run read it.
-- `queued_at` is the time of the last change: the cron leaves an address whose change is younger
-- than a request's KV write can take to land, so that no such write lands after its check.
ALTER TABLE edge_pending ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edge_pending ADD COLUMN queued_at INTEGER NOT NULL DEFAULT 0;
-- Oldest first, so that no address waits behind a steady stream of newer ones.
CREATE INDEX edge_pending_by_time ON edge_pending (queued_at);

CREATE TRIGGER suppressions_queue_inserted AFTER INSERT ON suppressions BEGIN
  INSERT INTO edge_pending (email, queued_at) VALUES (NEW.email, unixepoch())
  ON CONFLICT (email) DO UPDATE SET version = version + 1, queued_at = excluded.queued_at;
END;

CREATE TRIGGER suppressions_queue_updated AFTER UPDATE ON suppressions BEGIN
  INSERT INTO edge_pending (email, queued_at) VALUES (NEW.email, unixepoch())
  ON CONFLICT (email) DO UPDATE SET version = version + 1, queued_at = excluded.queued_at;
END;

CREATE TRIGGER suppressions_queue_deleted AFTER DELETE ON suppressions BEGIN
  INSERT INTO edge_pending (email, queued_at) VALUES (OLD.email, unixepoch())
  ON CONFLICT (email) DO UPDATE SET version = version + 1, queued_at = excluded.queued_at;
END;
