-- Suppression entries: the truth behind the KV edge copy. One row per address, list, scope and
-- origin: `event` rows come from single events (hard bounce, spam report, unsubscribe), `soft`
-- rows from a run of soft bounces, `api` rows from an operator. The API shows each row as an entry.
-- An entry applies while expires_at is NULL or in the future; expired rows wait for the cron.
CREATE TABLE suppressions (
  email TEXT NOT NULL,
  list TEXT NOT NULL,
  scope TEXT NOT NULL,
  origin TEXT NOT NULL,
  reason TEXT,
  event_count INTEGER NOT NULL,
  last_event_at INTEGER,
  bulk_id TEXT,
  event_id TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  expires_at INTEGER,
  -- What caused the latest change, copied into the history by the triggers below.
  change_event_id TEXT,
  change_note TEXT,
  PRIMARY KEY (email, list, scope, origin)
) STRICT, WITHOUT ROWID;

CREATE INDEX suppressions_by_expiry ON suppressions (expires_at) WHERE expires_at IS NOT NULL;

-- Operator removals: an event that occurred at or before removed_at never re-creates the entry.
CREATE TABLE suppression_removals (
  email TEXT NOT NULL,
  list TEXT NOT NULL,
  scope TEXT NOT NULL,
  removed_at INTEGER NOT NULL,
  PRIMARY KEY (email, list, scope)
) STRICT, WITHOUT ROWID;

-- Every change to an address's entries, oldest first by seq.
CREATE TABLE suppression_history (
  seq INTEGER PRIMARY KEY,
  email TEXT NOT NULL,
  at INTEGER NOT NULL,
  action TEXT NOT NULL,
  list TEXT NOT NULL,
  scope TEXT NOT NULL,
  source TEXT NOT NULL,
  event_id TEXT,
  note TEXT
) STRICT;

CREATE INDEX suppression_history_by_email ON suppression_history (email, seq);

-- Inserts and updates record themselves, whichever statement made them. Deletions are recorded by
-- the statements that delete (an operator's removal, the cron's expiry), which know why.
CREATE TRIGGER suppressions_inserted AFTER INSERT ON suppressions BEGIN
  INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
  VALUES (NEW.email, NEW.updated_at, 'added', NEW.list, NEW.scope,
    CASE NEW.origin WHEN 'api' THEN 'api' ELSE 'event' END, NEW.change_event_id, NEW.change_note);
END;

-- An update that sets expires_at to the time of the change withdraws the entry (a delivery broke
-- a soft-bounce run); one that revives an expired row adds it again; any other renews it.
CREATE TRIGGER suppressions_updated AFTER UPDATE ON suppressions BEGIN
  INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
  VALUES (NEW.email, NEW.updated_at,
    CASE
      WHEN NEW.expires_at IS NOT NULL AND NEW.expires_at <= NEW.updated_at THEN 'removed'
      WHEN OLD.expires_at IS NOT NULL AND OLD.expires_at <= NEW.updated_at THEN 'added'
      ELSE 'renewed'
    END,
    NEW.list, NEW.scope, CASE NEW.origin WHEN 'api' THEN 'api' ELSE 'event' END,
    NEW.change_event_id, NEW.change_note);
END;

-- Position of the reconcile cron's sweeps, so each run is bounded and the next one goes on.
CREATE TABLE cron_state (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
