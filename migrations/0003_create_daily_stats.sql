-- Daily rollups of stored events, by UTC day of the event, sender domain ('' when unknown), event
-- type and bounce type ('' unless a bounce). Stats read these, so they cost O(days) and outlive
-- event retention and erasure (they hold no address).
CREATE TABLE daily_stats (
  day INTEGER NOT NULL,
  from_domain TEXT NOT NULL,
  event TEXT NOT NULL,
  bounce_type TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (day, from_domain, event, bounce_type)
) STRICT, WITHOUT ROWID;

-- Fires once per row actually inserted, never for a duplicate skipped by ON CONFLICT, and inside
-- the callback's transaction: the rollups always equal what was stored.
CREATE TRIGGER events_counted AFTER INSERT ON events BEGIN
  INSERT INTO daily_stats (day, from_domain, event, bounce_type, count)
  VALUES (NEW.occurred_at / 86400, coalesce(NEW.from_domain, ''), NEW.event,
    iif(NEW.event = 'bounce', coalesce(NEW.bounce_type, ''), ''), 1)
  ON CONFLICT (day, from_domain, event, bounce_type) DO UPDATE SET count = count + 1;
END;
