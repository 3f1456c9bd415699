-- When a rejected callback was replayed and stored, and how many of its events were new.
ALTER TABLE rejected_callbacks ADD COLUMN replayed_at INTEGER;
ALTER TABLE rejected_callbacks ADD COLUMN replay_stored INTEGER;
