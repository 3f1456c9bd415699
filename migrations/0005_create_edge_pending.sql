-- Addresses whose KV copy must be rewritten from D1, for changes too large to push to KV in the
-- request that made them (an import of thousands of entries; KV allows 1,000 operations per
-- invocation). The reconcile cron drains it first.
CREATE TABLE edge_pending (
  email TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;
