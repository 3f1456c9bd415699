-- Pages of GET /v1/events?bulkId= and GET /v1/rejected come out of an index in the order they are
-- listed, so a page reads about its own rows instead of sorting the whole bulk send or table
-- (docs/scaling.md). The index entries grow by the time; no other statement changes.
DROP INDEX events_by_bulk_id;
CREATE INDEX events_by_bulk_id ON events (bulk_id, occurred_at) WHERE bulk_id IS NOT NULL;

DROP INDEX rejected_callbacks_by_time;
CREATE INDEX rejected_callbacks_by_time ON rejected_callbacks (received_at, id);
