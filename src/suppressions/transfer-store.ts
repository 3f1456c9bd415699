import type { StoredEntry } from "./entry";

/** An entry as an import writes it: a stored entry from single events or an operator. */
export type ImportedEntry = Omit<StoredEntry, "origin"> & { origin: "event" | "api" };

/** Rows per statement: keeps the one JSON parameter well under D1's 2 MB per value. */
export const IMPORT_CHUNK = 2000;

/**
 * Upserts imported entries (one statement per chunk, all in one batch, so 10,000 lines stay far
 * inside the Free plan's 50 queries) and queues their addresses for the KV copy. An entry
 * identical to the stored one is left untouched and records no history. Returns how many rows
 * were inserted or changed.
 */
export async function importEntries(db: D1Database, entries: ImportedEntry[]): Promise<number> {
	const statements: D1PreparedStatement[] = [];
	for (let i = 0; i < entries.length; i += IMPORT_CHUNK) {
		const chunk = JSON.stringify(entries.slice(i, i + IMPORT_CHUNK));
		statements.push(
			db
				.prepare(
					`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at,
						bulk_id, created_at, updated_at, expires_at, change_note)
					SELECT value ->> 'email', value ->> 'list', value ->> 'scope', value ->> 'origin',
						value ->> 'reason', value ->> 'eventCount', value ->> 'lastEventAt', value ->> 'bulkId',
						value ->> 'createdAt', value ->> 'updatedAt', value ->> 'expiresAt', 'imported'
					FROM json_each(?1) WHERE true
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
					RETURNING email`,
				)
				.bind(chunk),
			db
				.prepare(
					`INSERT INTO edge_pending (email) SELECT DISTINCT value ->> 'email' FROM json_each(?1)
					WHERE true ON CONFLICT (email) DO NOTHING`,
				)
				.bind(chunk),
		);
	}
	if (statements.length === 0) return 0;
	const results = await db.batch(statements);
	return results
		.filter((_, i) => i % 2 === 0)
		.reduce((sum, result) => sum + result.results.length, 0);
}

/** Up to `limit` addresses whose KV copy is due. */
export async function readPending(db: D1Database, limit: number): Promise<string[]> {
	const { results } = await db
		.prepare("SELECT email FROM edge_pending ORDER BY email LIMIT ?")
		.bind(limit)
		.all<{ email: string }>();
	return results.map((row) => row.email);
}

export async function clearPending(db: D1Database, emails: string[]): Promise<void> {
	await db
		.prepare("DELETE FROM edge_pending WHERE email IN (SELECT value FROM json_each(?))")
		.bind(JSON.stringify(emails))
		.run();
}
