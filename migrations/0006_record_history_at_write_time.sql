-- History lines carry the time the change was written, not the entry's updated_at, which an
-- import sets to the time recorded in the imported file.
DROP TRIGGER suppressions_inserted;
DROP TRIGGER suppressions_updated;

CREATE TRIGGER suppressions_inserted AFTER INSERT ON suppressions BEGIN
  INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
  VALUES (NEW.email, unixepoch(), 'added', NEW.list, NEW.scope,
    CASE NEW.origin WHEN 'api' THEN 'api' ELSE 'event' END, NEW.change_event_id, NEW.change_note);
END;

-- An update that sets expires_at to the time of the change withdraws the entry (a delivery broke
-- a soft-bounce run); one that revives an expired row adds it again; any other renews it.
CREATE TRIGGER suppressions_updated AFTER UPDATE ON suppressions BEGIN
  INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
  VALUES (NEW.email, unixepoch(),
    CASE
      WHEN NEW.expires_at IS NOT NULL AND NEW.expires_at <= NEW.updated_at THEN 'removed'
      WHEN OLD.expires_at IS NOT NULL AND OLD.expires_at <= NEW.updated_at THEN 'added'
      ELSE 'renewed'
    END,
    NEW.list, NEW.scope, CASE NEW.origin WHEN 'api' THEN 'api' ELSE 'event' END,
    NEW.change_event_id, NEW.change_note);
END;
