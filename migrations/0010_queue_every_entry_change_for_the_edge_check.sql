-- Every change to an address's entries queues the address in edge_pending, in the transaction that
-- makes it, so that the reconcile cron's next run checks the address's KV key whatever became of
-- the request's own KV write: it failed, KV refused it (one write per key per second), or an older
-- write landed after it. Without this, such a key waited for the sweep over every address, which
-- takes days for a long list. `version` counts the changes since the address was queued, so that
-- a run takes an address off the queue only if nothing changed it after the run read it.
ALTER TABLE edge_pending ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER suppressions_queue_inserted AFTER INSERT ON suppressions BEGIN
  INSERT INTO edge_pending (email) VALUES (NEW.email)
  ON CONFLICT (email) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER suppressions_queue_updated AFTER UPDATE ON suppressions BEGIN
  INSERT INTO edge_pending (email) VALUES (NEW.email)
  ON CONFLICT (email) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER suppressions_queue_deleted AFTER DELETE ON suppressions BEGIN
  INSERT INTO edge_pending (email) VALUES (OLD.email)
  ON CONFLICT (email) DO UPDATE SET version = version + 1;
END;
