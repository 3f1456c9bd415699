-- Unsubscribes stored by earlier versions may be scoped to a fromDomain holding one of RFC 5322's
-- specials that migration 0014 did not move: `(`, `)`, `[`, `]`, `\`, the semicolon, `:` or `"`
-- (`[news.example.com]`, `news.example.com:`). Such a scope names no sender domain, so no lookup's
-- or check's fromDomain for the sender's real domain matched it, and the address read as
-- deliverable to that sender. The policy now refuses these characters in a scope (policy.ts,
-- `unsubscribeScope`), and this moves the live entries stored before, as 0014 did for the others:
-- to every sender (`*`), merged into the address's `*` unsubscribe if it has one, with a `removed`
-- line for the old scope. Entries that have expired are left for the cron to retire.
CREATE TABLE unsubscribes_to_widen_further AS
SELECT email, scope FROM suppressions
WHERE list = 'unsubscribe' AND origin = 'event' AND scope <> '*'
  AND (expires_at IS NULL OR expires_at > unixepoch())
  AND EXISTS (
    SELECT 1 FROM json_each('["(", ")", "[", "]", "\\", ";", ":", "\""]') AS c
    WHERE instr(scope, c.value) > 0);

INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
SELECT email, unixepoch(), 'removed', 'unsubscribe', scope, 'event', NULL,
  'this scope names no sender domain: the entry now applies to every sender'
FROM unsubscribes_to_widen_further;

INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at, bulk_id,
  event_id, created_at, updated_at, expires_at, change_event_id, change_note)
SELECT s.email, s.list, '*', s.origin, s.reason, s.event_count, s.last_event_at, s.bulk_id,
  s.event_id, s.created_at, unixepoch(), s.expires_at, NULL,
  'moved from scope ' || s.scope || ', which names no sender domain'
FROM unsubscribes_to_widen_further AS w JOIN suppressions AS s
  ON s.email = w.email AND s.list = 'unsubscribe' AND s.scope = w.scope AND s.origin = 'event'
WHERE true
-- An expired `*` entry the cron has not retired is gone: the moved entry replaces it whole.
ON CONFLICT (email, list, scope, origin) DO UPDATE SET
  event_count = iif(suppressions.expires_at <= excluded.updated_at, excluded.event_count,
    suppressions.event_count + excluded.event_count),
  created_at = iif(suppressions.expires_at <= excluded.updated_at, excluded.created_at,
    min(suppressions.created_at, excluded.created_at)),
  reason = iif(suppressions.expires_at <= excluded.updated_at
    OR excluded.last_event_at > coalesce(suppressions.last_event_at, -1),
    excluded.reason, suppressions.reason),
  bulk_id = iif(suppressions.expires_at <= excluded.updated_at
    OR excluded.last_event_at > coalesce(suppressions.last_event_at, -1),
    excluded.bulk_id, suppressions.bulk_id),
  event_id = iif(suppressions.expires_at <= excluded.updated_at
    OR excluded.last_event_at > coalesce(suppressions.last_event_at, -1),
    excluded.event_id, suppressions.event_id),
  -- The longer of the two: never (NULL) wins.
  expires_at = iif(suppressions.expires_at <= excluded.updated_at, excluded.expires_at,
    iif(suppressions.expires_at IS NULL OR excluded.expires_at IS NULL, NULL,
      max(suppressions.expires_at, excluded.expires_at))),
  last_event_at = iif(suppressions.expires_at <= excluded.updated_at, excluded.last_event_at,
    coalesce(max(suppressions.last_event_at, excluded.last_event_at),
      suppressions.last_event_at, excluded.last_event_at)),
  updated_at = excluded.updated_at,
  change_event_id = NULL,
  change_note = excluded.change_note;

DELETE FROM suppressions
WHERE list = 'unsubscribe' AND origin = 'event'
  AND (email, scope) IN (SELECT email, scope FROM unsubscribes_to_widen_further);

DROP TABLE unsubscribes_to_widen_further;
