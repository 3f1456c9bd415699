-- Unsubscribes stored by earlier versions may be scoped to a string that no sender domain is: a
-- fromDomain that was an address, a list or a URL was taken as the scope as received (fixed in
-- policy.ts, `unsubscribeScope`), and a `from` in display form (`News <news@example.com>`)
-- without fromDomain gave `example.com>` (fixed in the normaliser). No lookup's or check's
-- fromDomain ever matches such a scope, so the address read as deliverable for every sender that
-- names its domain, although a lookup without fromDomain showed it suppressed. Those fixes changed
-- only what new events write; this one moves the entries already stored.
-- Such an entry now applies to every sender (`*`), what the policy does with an unsubscribe whose
-- sender domain cannot be told: SQL cannot apply the mailbox rule that finds the domain in `from`,
-- and a wider scope never lets a suppressed address be mailed. A scope is moved when it is empty,
-- longer than a domain name (253), or holds white space (as JavaScript's \s reads it), `@`, `/`,
-- `*`, `,`, `<` or `>`. Entries that have expired are left for the cron to retire. The entries
-- to move are listed once, in a table of this migration's own.
-- The moved entry merges into the address's `*` unsubscribe, if it has one, as two events would:
-- counts add up, and the later evidence gives the details. The triggers record the `*` entry's
-- `added` or `renewed` line and queue the address for the cron's KV check; the old scope gets a
-- `removed` line here, as the statements that delete write their own.
CREATE TABLE unsubscribes_to_widen AS
SELECT email, scope FROM suppressions
WHERE list = 'unsubscribe' AND origin = 'event' AND scope <> '*'
  AND (expires_at IS NULL OR expires_at > unixepoch())
  AND (scope = '' OR length(scope) > 253 OR EXISTS (
    SELECT 1 FROM json_each('["@", "/", "*", ",", "<", ">", " ", "\t", "\n", "\u000b", "\f", "\r",
      "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006",
      "\u2007", "\u2008", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
      "\ufeff"]') AS c
    WHERE instr(scope, c.value) > 0));

INSERT INTO suppression_history (email, at, action, list, scope, source, event_id, note)
SELECT email, unixepoch(), 'removed', 'unsubscribe', scope, 'event', NULL,
  'this scope names no sender domain: the entry now applies to every sender'
FROM unsubscribes_to_widen;

INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at, bulk_id,
  event_id, created_at, updated_at, expires_at, change_event_id, change_note)
SELECT s.email, s.list, '*', s.origin, s.reason, s.event_count, s.last_event_at, s.bulk_id,
  s.event_id, s.created_at, unixepoch(), s.expires_at, NULL,
  'moved from scope ' || s.scope || ', which names no sender domain'
FROM unsubscribes_to_widen AS w JOIN suppressions AS s
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
  AND (email, scope) IN (SELECT email, scope FROM unsubscribes_to_widen);

DROP TABLE unsubscribes_to_widen;
