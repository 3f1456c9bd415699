import type { StoredEntry } from "./entry";

/**
 * An entry as an import writes it: a stored entry from events or an operator. `eventCount`,
 * `lastEventAt` and `bulkId` may be absent: an existing entry then keeps its own (new ones get 0,
 * null and null).
 */
export type ImportedEntry = Omit<
	StoredEntry,
	"origin" | "eventCount" | "lastEventAt" | "bulkId"
> & {
	origin: "event" | "api";
} & Partial<Pick<StoredEntry, "eventCount" | "lastEventAt" | "bulkId">>;

/** Rows per statement: keeps the one JSON parameter well under D1's 2 MB per value. */
export const IMPORT_CHUNK = 2000;

// The entry an import line writes: source "event" means whichever entry events made for the
// address, list and scope (the export shows single-event and soft-bounce entries alike as "event"),
// and a field the line does not carry keeps the stored entry's value.
const UPSERT_IMPORTED = `WITH lines AS (
	SELECT value AS line, value ->> 'email' AS email, value ->> 'list' AS list,
		value ->> 'scope' AS scope,
		iif(value ->> 'origin' = 'api', 'api', coalesce((SELECT s.origin FROM suppressions AS s
			WHERE s.email = value ->> 'email' AND s.list = value ->> 'list'
				AND s.scope = value ->> 'scope' AND s.origin IN ('event', 'soft')
			ORDER BY s.origin LIMIT 1), 'event')) AS origin
	FROM json_each(?1)
)
INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at, bulk_id,
	created_at, updated_at, expires_at, change_note)
SELECT l.email, l.list, l.scope, l.origin, l.line ->> 'reason',
	iif(json_type(l.line, '$.eventCount') IS NULL, coalesce(s.event_count, 0), l.line ->> 'eventCount'),
	iif(json_type(l.line, '$.lastEventAt') IS NULL, s.last_event_at, l.line ->> 'lastEventAt'),
	iif(json_type(l.line, '$.bulkId') IS NULL, s.bulk_id, l.line ->> 'bulkId'),
	l.line ->> 'createdAt', l.line ->> 'updatedAt', l.line ->> 'expiresAt', 'imported'
FROM lines AS l LEFT JOIN suppressions AS s
	ON s.email = l.email AND s.list = l.list AND s.scope = l.scope AND s.origin = l.origin
WHERE true
ON CONFLICT (email, list, scope, origin) DO UPDATE SET
	reason = excluded.reason, event_count = excluded.event_count,
	last_event_at = excluded.last_event_at, bulk_id = excluded.bulk_id,
	created_at = excluded.created_at, updated_at = excluded.updated_at,
	expires_at = excluded.expires_at, change_event_id = NULL, change_note = 'imported'
WHERE suppressions.reason IS NOT excluded.reason
	OR suppressions.event_count IS NOT excluded.event_count
	OR suppressions.last_event_at IS NOT excluded.last_event_at
	OR suppressions.bulk_id IS NOT excluded.bulk_id
	OR suppressions.created_at IS NOT excluded.created_at
	OR suppressions.updated_at IS NOT excluded.updated_at
	OR suppressions.expires_at IS NOT excluded.expires_at
RETURNING email`;

/**
 * Upserts imported entries (one statement per chunk, all in one batch, so 10,000 lines stay far
 * inside the Free plan's 50 queries); each changed entry queues its address for the KV copy
 * (migration 0010). An entry identical to the stored one is left untouched and records no
 * history. Returns the address of each row inserted or changed.
 */
export async function importEntries(db: D1Database, entries: ImportedEntry[]): Promise<string[]> {
	const statements: D1PreparedStatement[] = [];
	for (let i = 0; i < entries.length; i += IMPORT_CHUNK) {
		statements.push(
			db.prepare(UPSERT_IMPORTED).bind(JSON.stringify(entries.slice(i, i + IMPORT_CHUNK))),
		);
	}
	if (statements.length === 0) return [];
	const results = await db.batch<{ email: string }>(statements);
	return results.flatMap((result) => result.results.map((row) => row.email));
}

/** Queues addresses whose KV copy is due, for the cron's next run. */
export async function queuePending(db: D1Database, emails: string[]): Promise<void> {
	await db
		.prepare(
			`INSERT INTO edge_pending (email) SELECT value FROM json_each(?1) WHERE true
			ON CONFLICT (email) DO NOTHING`,
		)
		.bind(JSON.stringify(emails))
		.run();
}

/** A queued address and the count of changes queued for it (migration 0010). */
export interface Pending {
	email: string;
	version: number;
}

/**
 * Up to `limit` addresses whose KV copy is due, oldest first, of those last queued at or before
 * `settledBy`.
 */
export async function readPending(
	db: D1Database,
	limit: number,
	settledBy: number,
): Promise<Pending[]> {
	const { results } = await db
		.prepare(
			"SELECT email, version FROM edge_pending WHERE queued_at <= ?2 ORDER BY queued_at, email LIMIT ?1",
		)
		.bind(limit, settledBy)
		.all<Pending>();
	return results;
}

/**
 * Takes checked addresses off the queue, each only if no change queued it again since it was
 * read (its version is the same): such a change is checked by the next run.
 */
export async function clearPending(db: D1Database, checked: Pending[]): Promise<void> {
	await db
		.prepare(
			`DELETE FROM edge_pending WHERE (email, version) IN
			(SELECT value ->> 'email', value ->> 'version' FROM json_each(?1))`,
		)
		.bind(JSON.stringify(checked))
		.run();
}
