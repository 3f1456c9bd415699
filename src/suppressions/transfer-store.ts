import type { StoredEntry } from "./entry";

/**
 * An entry as an import writes it: a stored entry from events or an operator. `eventCount`,
 * `lastEventAt`, `bulkId`, `createdAt` and `updatedAt` may be absent: an existing entry then keeps
 * its own (new ones get 0, null, null, now and now). `exact` marks one of the two event lines an
 * address's bounce entries for every sender export as (its single-event entry, then its
 * soft-bounce entry), each written to its own origin.
 */
export type ImportedEntry = Omit<
	StoredEntry,
	"eventCount" | "lastEventAt" | "bulkId" | "createdAt" | "updatedAt"
> &
	Partial<
		Pick<StoredEntry, "eventCount" | "lastEventAt" | "bulkId" | "createdAt" | "updatedAt">
	> & {
		exact?: true;
	};

/**
 * Bytes of JSON per statement: D1 takes at most 2,000,000 bytes in one value, and an import's
 * lines, or a cron run's addresses, go in as one JSON parameter per statement.
 */
export const JSON_CHUNK_BYTES = 1_000_000;

// The entry an import line writes: source "event" means whichever entry events made for the
// address, list and scope (the export shows single-event and soft-bounce entries alike as "event"),
// unless the line is one of an exported pair (`exact`); a field the line does not carry keeps the
// stored entry's value. A line that changes an entry without carrying `updatedAt` (or carrying
// the stored one) updates it now (?2). A stored entry that has expired (the cron has not retired
// it yet) is gone: the line makes a new entry, as it would once the cron had deleted the row.
const UPSERT_IMPORTED = `WITH lines AS (
	SELECT value AS line, value ->> 'email' AS email, value ->> 'list' AS list,
		value ->> 'scope' AS scope,
		iif(value ->> 'origin' = 'api' OR value ->> 'exact', value ->> 'origin',
			coalesce((SELECT s.origin FROM suppressions AS s
				WHERE s.email = value ->> 'email' AND s.list = value ->> 'list'
					AND s.scope = value ->> 'scope' AND s.origin IN ('event', 'soft')
				-- The entry the export showed: a row that has expired is gone, even unretired.
				ORDER BY s.expires_at IS NOT NULL AND s.expires_at <= ?2, s.origin LIMIT 1), 'event')) AS origin
	FROM json_each(?1)
)
INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at, bulk_id,
	created_at, updated_at, expires_at, change_note)
SELECT l.email, l.list, l.scope, l.origin, l.line ->> 'reason',
	iif(json_type(l.line, '$.eventCount') IS NULL, coalesce(s.event_count, 0), l.line ->> 'eventCount'),
	iif(json_type(l.line, '$.lastEventAt') IS NULL, s.last_event_at, l.line ->> 'lastEventAt'),
	iif(json_type(l.line, '$.bulkId') IS NULL, s.bulk_id, l.line ->> 'bulkId'),
	coalesce(l.line ->> 'createdAt', s.created_at, ?2), coalesce(l.line ->> 'updatedAt', s.updated_at, ?2),
	l.line ->> 'expiresAt', 'imported'
FROM lines AS l LEFT JOIN suppressions AS s
	ON s.email = l.email AND s.list = l.list AND s.scope = l.scope AND s.origin = l.origin
		AND (s.expires_at IS NULL OR s.expires_at > ?2)
WHERE true
ON CONFLICT (email, list, scope, origin) DO UPDATE SET
	reason = excluded.reason, event_count = excluded.event_count,
	last_event_at = excluded.last_event_at, bulk_id = excluded.bulk_id,
	created_at = excluded.created_at,
	updated_at = iif(excluded.updated_at IS suppressions.updated_at, ?2, excluded.updated_at),
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
 * The JSON parameters of the statements that take `values` (an import's entries, a cron run's
 * addresses): every value once, in order, each parameter at most {@link JSON_CHUNK_BYTES} bytes of
 * UTF-8 (one value is far smaller). 5,000 of the longest addresses take about 3.8 MB.
 */
export function jsonChunks(values: readonly unknown[]): string[] {
	const encoder = new TextEncoder();
	const chunks: string[] = [];
	let items: string[] = [];
	// The brackets, less the comma that the last item, unlike the others, does not have.
	let bytes = 1;
	for (const value of values) {
		const item = JSON.stringify(value);
		const size = encoder.encode(item).byteLength + 1; // and its comma
		if (items.length > 0 && bytes + size > JSON_CHUNK_BYTES) {
			chunks.push(`[${items.join(",")}]`);
			items = [];
			bytes = 1;
		}
		items.push(item);
		bytes += size;
	}
	if (items.length > 0) chunks.push(`[${items.join(",")}]`);
	return chunks;
}

// The addresses of an import's chunk that wait for the cron to check their KV keys.
const SELECT_QUEUED =
	"SELECT email FROM edge_pending WHERE email IN (SELECT value FROM json_each(?1))";

/**
 * Upserts imported entries (one statement per chunk of 1 MB of JSON, all in one batch, which is
 * one of the Free plan's 50 queries: an 8 MiB import of ordinary lines is about nine statements,
 * and about 52 when every reason is 4,096 control characters, which JSON writes in 6 bytes each);
 * each changed entry queues its address for the KV copy (migration 0010). An entry identical to
 * the stored one is left untouched and records no history. Returns the address of each row inserted or changed, and, read at the end of the
 * same batch, the import's addresses still queued: those it changed, and those of unchanged lines
 * that an earlier change left for the cron, such as an earlier attempt of this import that D1
 * committed without answering, which wrote no key and put no lag mark.
 */
export async function importEntries(
	db: D1Database,
	entries: ImportedEntry[],
	now: number,
): Promise<{ changed: string[]; queued: string[] }> {
	const upserts = jsonChunks(entries).map((chunk) => db.prepare(UPSERT_IMPORTED).bind(chunk, now));
	if (upserts.length === 0) return { changed: [], queued: [] };
	const emails = [...new Set(entries.map((entry) => entry.email))];
	const reads = jsonChunks(emails).map((chunk) => db.prepare(SELECT_QUEUED).bind(chunk));
	const results = await db.batch<{ email: string }>([...upserts, ...reads]);
	const emailsOf = (part: typeof results) =>
		part.flatMap((result) => result.results.map((row) => row.email));
	return {
		changed: emailsOf(results.slice(0, upserts.length)),
		queued: emailsOf(results.slice(upserts.length)),
	};
}

/**
 * Queues addresses whose KV copy is due. With `queuedAt` 0 they are due at the cron's next run and
 * an address already queued keeps its place; with a time (a write that failed) they go behind
 * every address queued before it, so a key KV keeps refusing never holds up the others.
 */
export async function queuePending(db: D1Database, emails: string[], queuedAt = 0): Promise<void> {
	const queue = db.prepare(
		`INSERT INTO edge_pending (email, queued_at) SELECT value, ?2 FROM json_each(?1) WHERE true
		ON CONFLICT (email) DO UPDATE SET queued_at = excluded.queued_at
		WHERE excluded.queued_at > edge_pending.queued_at`,
	);
	const statements = jsonChunks(emails).map((chunk) => queue.bind(chunk, queuedAt));
	if (statements.length > 0) await db.batch(statements);
}

/** A queued address and the count of changes queued for it (migration 0010). */
export interface Pending {
	email: string;
	version: number;
	queuedAt: number;
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
			"SELECT email, version, queued_at AS queuedAt FROM edge_pending WHERE queued_at <= ?2 ORDER BY queued_at, email LIMIT ?1",
		)
		.bind(limit, settledBy)
		.all<Pending>();
	return results;
}

/**
 * Takes checked addresses off the queue, each only if no change queued it again since it was
 * read (its version and time are the same): such a change is checked by the next run. The time
 * tells apart a row that another run took off and a later change queued again, whose version
 * starts again at 0: it was queued after this run read the queue, so at a later time.
 */
export async function clearPending(db: D1Database, checked: Pending[]): Promise<void> {
	const clear = db.prepare(
		`DELETE FROM edge_pending WHERE (email, version, queued_at) IN
		(SELECT value ->> 'email', value ->> 'version', value ->> 'queuedAt' FROM json_each(?1))`,
	);
	const statements = jsonChunks(checked).map((chunk) => clear.bind(chunk));
	if (statements.length > 0) await db.batch(statements);
}
