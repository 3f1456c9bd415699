-- `GET /v1/stats?fromDomain=` read every sender domain's rollups of the range (the primary key
-- starts with the day) and kept one domain's. The cron writes a few dozen rollup rows a run, so
-- this index costs next to nothing; events get no new index.
CREATE INDEX daily_stats_by_domain ON daily_stats (from_domain, day);
