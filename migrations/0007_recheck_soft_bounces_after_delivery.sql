-- Addresses whose soft-bounce entry must be decided again: a delivery was stored while the entry
-- was live, and a late delivery can break the run that made it. The callback that stored the
-- delivery decides again at once, in a second round trip, and clears the row; the reconcile cron
-- drains any row left behind (that round trip failed). Written by the trigger below in the
-- transaction that stores the delivery, so no such delivery can be missed. Most deliveries go to
-- addresses without a soft entry and cost only the trigger's one key lookup.
CREATE TABLE soft_bounce_recheck (
  email TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;

CREATE TRIGGER events_delivered_during_soft_entry AFTER INSERT ON events
WHEN NEW.event = 'delivered' AND EXISTS (SELECT 1 FROM suppressions AS s
  WHERE s.email = NEW.email AND s.list = 'bounce' AND s.scope = '*' AND s.origin = 'soft'
    AND s.expires_at > NEW.received_at)
BEGIN
  INSERT INTO soft_bounce_recheck (email) VALUES (NEW.email) ON CONFLICT DO NOTHING;
END;
