-- An entry that ran out on its own and comes back (a PUT, an event or an import) before the cron
-- retires it gets its `expired` line first, at its expiry, as the cron and an operator's removal
-- write it.
-- Whether it ran out and whether it comes back are judged at the time of the change: the later of
-- the writer's time (`updated_at`; an import's is never in the future) and the database's clock,
-- so an update that leaves the entry expired (older evidence) is a renewal, and the cron retires
-- it as before.
DROP TRIGGER suppressions_updated;

CREATE TRIGGER suppressions_updated AFTER UPDATE ON suppressions BEGIN
  INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
  SELECT NEW.email, OLD.expires_at, 'expired', NEW.list, NEW.scope, 'cron', NULL, NULL
  WHERE OLD.expires_at IS NOT NULL AND OLD.expires_at > OLD.updated_at
    AND OLD.expires_at <= max(NEW.updated_at, unixepoch())
    AND (NEW.expires_at IS NULL OR NEW.expires_at > max(NEW.updated_at, unixepoch()));
  INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
  VALUES (NEW.email, unixepoch(),
    CASE
      WHEN NEW.expires_at IS NOT NULL AND NEW.expires_at <= NEW.updated_at THEN 'removed'
      WHEN OLD.expires_at IS NOT NULL AND OLD.expires_at <= max(NEW.updated_at, unixepoch())
        AND (NEW.expires_at IS NULL OR NEW.expires_at > max(NEW.updated_at, unixepoch())) THEN 'added'
      ELSE 'renewed'
    END,
    NEW.list, NEW.scope, CASE NEW.origin WHEN 'api' THEN 'api' ELSE 'event' END,
    NEW.change_event_id, NEW.change_note);
END;
