import { domainKey } from "../email";
import type { Evidence } from "./policy";
import { INSERT_COLUMNS } from "./store";

// The evidence that occurred last (ties broken by event id) decides the entry's details. An entry
// whose evidence has no time or id (an import need not carry them) counts as older than any event.
const NEWER = `(excluded.last_event_at > coalesce(suppressions.last_event_at, -1) OR
	(excluded.last_event_at = suppressions.last_event_at
		AND excluded.event_id > coalesce(suppressions.event_id, '')))`;

// A row that has expired (the cron has not retired it yet) is gone: evidence that reaches it still
// applies (expired evidence is skipped before), so it makes a new entry, older or not, as it would
// once the cron had deleted the row. An older event can outlast the latest one's expiry when
// HARD_BOUNCE_SUPPRESS_DAYS was raised since, or an import shortened the entry.
const LAPSED = "suppressions.expires_at <= excluded.updated_at";
const TAKES = `(${LAPSED} OR ${NEWER})`;

/**
 * Merges single-event evidence into entries. It must run in the batch *before* the events are
 * inserted: it skips evidence whose event is already stored, so a redelivery never counts twice.
 * Evidence at or before an operator's removal of its entry, or already expired, is skipped too: a
 * removal is met by the evidence's scope as spelt or by its `domainKey` form, which a removal of a
 * domain scope also records, so any spelling of the domain meets it.
 * `max(rank)` makes SQLite take the other bare columns from the latest evidence of each group.
 * Returns the addresses whose entries changed.
 */
export function applyEvidence(
	db: D1Database,
	evidence: Evidence[],
	now: number,
): D1PreparedStatement {
	return db
		.prepare(
			`INSERT INTO suppressions ${INSERT_COLUMNS}
			SELECT email, list, scope, 'event', reason, n, at, bulk_id, event_id, ?2, ?2, expires_at, event_id, reason
			FROM (
				SELECT e.value ->> 'email' AS email, e.value ->> 'list' AS list, e.value ->> 'scope' AS scope,
					e.value ->> 'reason' AS reason, e.value ->> 'at' AS at, e.value ->> 'bulkId' AS bulk_id,
					e.value ->> 'eventId' AS event_id, e.value ->> 'expiresAt' AS expires_at,
					count(*) AS n, max(e.value ->> 'rank') AS rank
				FROM json_each(?1) AS e
				WHERE NOT EXISTS (SELECT 1 FROM events WHERE id = e.value ->> 'eventId')
					AND NOT EXISTS (
						SELECT 1 FROM suppression_removals AS r
						WHERE r.email = e.value ->> 'email' AND r.list = e.value ->> 'list'
							AND r.scope IN (e.value ->> 'scope', e.value ->> 'scopeKey')
							AND r.removed_at >= e.value ->> 'at')
					AND (e.value ->> 'expiresAt' IS NULL OR e.value ->> 'expiresAt' > ?2)
				GROUP BY 1, 2, 3
			) WHERE true
			ON CONFLICT (email, list, scope, origin) DO UPDATE SET
				event_count = iif(${LAPSED}, excluded.event_count,
					suppressions.event_count + excluded.event_count),
				created_at = iif(${LAPSED}, excluded.created_at, suppressions.created_at),
				reason = iif(${TAKES}, excluded.reason, suppressions.reason),
				bulk_id = iif(${TAKES}, excluded.bulk_id, suppressions.bulk_id),
				expires_at = iif(${TAKES}, excluded.expires_at, suppressions.expires_at),
				event_id = iif(${TAKES}, excluded.event_id, suppressions.event_id),
				last_event_at = iif(${LAPSED}, excluded.last_event_at,
					max(excluded.last_event_at, coalesce(suppressions.last_event_at, -1))),
				updated_at = excluded.updated_at,
				change_event_id = excluded.change_event_id,
				change_note = excluded.change_note
			RETURNING email`,
		)
		.bind(
			JSON.stringify(evidence.map((item) => ({ ...item, scopeKey: domainKey(item.scope) }))),
			now,
		);
}
