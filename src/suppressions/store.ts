import type { PolicySettings } from "../config";
import { isoTime } from "../events/event";
import { MAX_UNIX_SECONDS } from "../tencent/schema";
import type { StoredEntry } from "./entry";
import type { Evidence, ListName } from "./policy";
import { jsonChunks } from "./transfer-store";

/** The columns of a suppression entry, named as {@link StoredEntry} names them. */
export const ENTRY_COLUMNS = `email, list, scope, origin, reason, event_count AS eventCount,
	last_event_at AS lastEventAt, bulk_id AS bulkId, created_at AS createdAt,
	updated_at AS updatedAt, expires_at AS expiresAt`;

const INSERT_COLUMNS = `(email, list, scope, origin, reason, event_count, last_event_at, bulk_id,
	event_id, created_at, updated_at, expires_at, change_event_id, change_note)`;

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
 * Evidence at or before an operator's removal of its entry, or already expired, is skipped too.
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
							AND r.scope = e.value ->> 'scope' AND r.removed_at >= e.value ->> 'at')
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
		.bind(JSON.stringify(evidence), now);
}

/**
 * The number of soft bounces in the run that ends in second `end` (an SQL expression), for the
 * address row `m` (its `email` and `removed_at`): those of the address at or before `end`, within
 * the window (?4 seconds) before it, after its latest delivery (one in the same second counts as
 * after the bounce) and after the operator's removal. Each bound is found in the address's index,
 * so the count reads only the run's events.
 */
function runLength(end: string): string {
	const latestDelivery = `coalesce((SELECT d.occurred_at FROM events AS d
		WHERE d.email = m.email AND d.occurred_at <= ${end} AND d.occurred_at >= ${end} - ?4
			AND d.event = 'delivered'
		ORDER BY d.occurred_at DESC LIMIT 1), -1)`;
	return `(SELECT count(*) FROM events AS b WHERE b.email = m.email AND b.occurred_at <= ${end}
		AND b.occurred_at > max(${end} - ?4, m.removed_at, ${latestDelivery})
		AND b.event = 'bounce' AND coalesce(b.bounce_type, 'soft') = 'soft')`;
}

/**
 * Decides the soft-bounce entry of each address from its stored events, after the request's
 * events are inserted. A run is `softBounceLimit` soft bounces within `softBounceWindowSeconds`
 * with no delivery between them (a delivery in the same second as a bounce counts as after it),
 * none at or before an operator's removal of the address's bounce entry. The latest run that still
 * applies makes a `bounce` entry for every sender, expiring `softBounceSuppressSeconds` after its
 * last bounce. When no run applies any more because a delivery arrived late (one stored inside
 * the entry's run), a live soft entry is withdrawn by setting its expiry to now, which the history
 * records as a removal; an entry whose run is simply no longer stored (the address's events were
 * erased, or are past retention) stands until it expires.
 * Returns the addresses whose entries changed.
 */
export function recomputeSoftBounces(
	db: D1Database,
	emails: readonly string[],
	policy: PolicySettings,
	now: number,
): D1PreparedStatement {
	return db
		.prepare(
			`WITH affected(email) AS (SELECT DISTINCT value FROM json_each(?1)),
			removal AS (
				SELECT a.email, coalesce((SELECT r.removed_at FROM suppression_removals AS r
					WHERE r.email = a.email AND r.list = 'bounce' AND r.scope = '*'), -1) AS removed_at
				FROM affected AS a),
			-- The latest second with a soft bounce still in force that ends a run: a run depends
			-- only on its last second, so each second is tried once, newest first, and the first to
			-- qualify ends the search; a long run is read about once.
			ends AS (
				SELECT m.email, m.removed_at, (SELECT s.occurred_at FROM events AS s
					WHERE s.email = m.email AND s.occurred_at > max(m.removed_at, ?2 - ?5)
						AND s.event = 'bounce' AND coalesce(s.bounce_type, 'soft') = 'soft'
					GROUP BY s.occurred_at HAVING ${runLength("s.occurred_at")} >= ?3
					ORDER BY s.occurred_at DESC LIMIT 1) AS at
				FROM removal AS m),
			-- Of that second's soft bounces, the one with the greatest id gives the details.
			latest AS (
				SELECT m.email, s.id, s.occurred_at AS at, s.reason, s.bulk_id, ${runLength("s.occurred_at")} AS n
				FROM ends AS m CROSS JOIN events AS s ON s.id = (SELECT max(x.id) FROM events AS x
					WHERE x.email = m.email AND x.occurred_at = m.at
						AND x.event = 'bounce' AND coalesce(x.bounce_type, 'soft') = 'soft'))
			INSERT INTO suppressions ${INSERT_COLUMNS}
			SELECT a.email, 'bounce', '*', 'soft', l.reason, coalesce(l.n, 0), l.at, l.bulk_id, l.id, ?2, ?2,
				iif(l.id IS NULL, ?2, min(l.at + ?5, ?6)), l.id,
				iif(l.id IS NULL, 'a delivery broke the run of soft bounces', l.reason)
			FROM affected AS a LEFT JOIN latest AS l ON l.email = a.email
			WHERE l.id IS NOT NULL OR EXISTS (SELECT 1 FROM suppressions AS x WHERE x.email = a.email
				AND x.list = 'bounce' AND x.scope = '*' AND x.origin = 'soft' AND x.expires_at > ?2
				-- Withdrawn only by a stored delivery that breaks its run: one within the window up
				-- to and including its last second (as in runLength), at or after a stored soft
				-- bounce of that window. With the run's bounces gone (erased, or past retention), a
				-- delivery no stored bounce precedes may have come before the run began: the entry
				-- stands until it expires. Such a delivery exists when the window's latest delivery
				-- is at or after its earliest soft bounce: two walks of the address's index, where
				-- looking for a bounce before each delivery read the square of the deliveries.
				AND (SELECT d.occurred_at FROM events AS d WHERE d.email = x.email
						AND d.occurred_at > x.last_event_at - ?4 AND d.occurred_at <= x.last_event_at
						AND d.event = 'delivered'
						ORDER BY d.occurred_at DESC LIMIT 1)
					>= (SELECT b.occurred_at FROM events AS b WHERE b.email = x.email
						AND b.occurred_at > x.last_event_at - ?4 AND b.occurred_at <= x.last_event_at
						AND b.event = 'bounce' AND coalesce(b.bounce_type, 'soft') = 'soft'
						ORDER BY b.occurred_at LIMIT 1))
			ON CONFLICT (email, list, scope, origin) DO UPDATE SET
				reason = iif(excluded.event_id IS NULL, suppressions.reason, excluded.reason),
				event_count = iif(excluded.event_id IS NULL, suppressions.event_count, excluded.event_count),
				last_event_at = coalesce(excluded.last_event_at, suppressions.last_event_at),
				bulk_id = iif(excluded.event_id IS NULL, suppressions.bulk_id, excluded.bulk_id),
				event_id = coalesce(excluded.event_id, suppressions.event_id),
				expires_at = excluded.expires_at,
				-- A run that follows an expired (or withdrawn) row makes a new entry.
				created_at = iif(suppressions.expires_at <= excluded.updated_at, excluded.created_at,
					suppressions.created_at),
				updated_at = excluded.updated_at,
				change_event_id = excluded.change_event_id,
				change_note = excluded.change_note
			WHERE excluded.event_id IS NOT suppressions.event_id
				OR excluded.event_count IS NOT suppressions.event_count
				OR excluded.expires_at IS NOT suppressions.expires_at
			RETURNING email`,
		)
		.bind(
			JSON.stringify(emails),
			now,
			policy.softBounceLimit,
			policy.softBounceWindowSeconds,
			policy.softBounceSuppressSeconds,
			// An expiry stays a time the API can write (year 9999 at most).
			MAX_UNIX_SECONDS,
		);
}

/**
 * Decides the soft-bounce entries of queued addresses again (see migration 0007) and takes them
 * off the queue, in one transaction: a pair of statements per {@link jsonChunks} chunk of them,
 * as a cron run's 5,000 may take more than D1 holds in one value. Returns the addresses whose
 * entries changed.
 */
export async function recheckSoftBounces(
	db: D1Database,
	emails: readonly string[],
	policy: PolicySettings,
	now: number,
): Promise<string[]> {
	const dequeue = db.prepare(
		"DELETE FROM soft_bounce_recheck WHERE email IN (SELECT value FROM json_each(?1))",
	);
	const statements = jsonChunks(emails).flatMap((chunk) => [
		recomputeSoftBounces(db, JSON.parse(chunk) as string[], policy, now),
		dequeue.bind(chunk),
	]);
	if (statements.length === 0) return [];
	const results = await db.batch<{ email: string }>(statements);
	// The recomputes are the even statements.
	return results.flatMap((result, i) =>
		i % 2 === 0 ? result.results.map((row) => row.email) : [],
	);
}

/** Up to `limit` addresses queued for a soft-bounce recheck that no callback finished. */
export async function readSoftBounceRecheck(db: D1Database, limit: number): Promise<string[]> {
	const { results } = await db
		.prepare("SELECT email FROM soft_bounce_recheck ORDER BY email LIMIT ?1")
		.bind(limit)
		.all<{ email: string }>();
	return results.map((row) => row.email);
}

/**
 * Bytes a rendered entry takes at least besides its scope, reason and bulk id (188 with all
 * three empty, the shortest list and source, and no event time): a lower bound, so that reading
 * entries up to `upTo` bytes of them never stops short of what a KV value can hold.
 */
const MIN_RENDERED_ENTRY_BYTES = 150;

/**
 * The statement that reads the entries of `emails` that apply at `now`, ordered by address; a
 * callback puts it at the end of its own batch to read what that batch wrote. With `upTo`, an
 * address's entries are read only until they take more than `upTo` bytes as the API renders them
 * (its first entries, and the one that passes it): enough to write its KV value, which is the
 * marker beyond that size, however many more entries it has.
 */
export function selectEntries(
	db: D1Database,
	emails: readonly string[],
	now: number,
	upTo?: number,
): D1PreparedStatement {
	const live = `FROM suppressions
		WHERE email IN (SELECT value FROM json_each(?1)) AND (expires_at IS NULL OR expires_at > ?2)`;
	if (upTo === undefined) {
		return db
			.prepare(`SELECT ${ENTRY_COLUMNS} ${live} ORDER BY email, list, scope, origin`)
			.bind(JSON.stringify(emails), now);
	}
	const size = `${MIN_RENDERED_ENTRY_BYTES} + length(CAST(scope AS BLOB))
		+ coalesce(length(CAST(reason AS BLOB)), 0) + coalesce(length(CAST(bulk_id AS BLOB)), 0)`;
	return db
		.prepare(
			`SELECT ${ENTRY_COLUMNS} FROM (
				SELECT *, coalesce(sum(${size}) OVER (PARTITION BY email ORDER BY list, scope, origin
					ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before ${live})
			WHERE before <= ?3 ORDER BY email, list, scope, origin`,
		)
		.bind(JSON.stringify(emails), now, upTo);
}

/** Rows of {@link selectEntries}, grouped by address. */
export function groupEntries(rows: readonly StoredEntry[]): Map<string, StoredEntry[]> {
	const byEmail = new Map<string, StoredEntry[]>();
	for (const entry of rows) {
		const entries = byEmail.get(entry.email) ?? [];
		entries.push(entry);
		byEmail.set(entry.email, entries);
	}
	return byEmail;
}

/**
 * The entries of `emails` that apply at `now`, grouped by address; with `upTo`, only as many of
 * an address's entries as {@link selectEntries} reads.
 */
export async function readEntries(
	db: D1Database,
	emails: readonly string[],
	now: number,
	upTo?: number,
): Promise<Map<string, StoredEntry[]>> {
	const { results } = await selectEntries(db, emails, now, upTo).all<StoredEntry>();
	return groupEntries(results);
}

/** What deciding a lookup reads of an entry (its list, scope and expiry), as the API writes it. */
export interface EntryScope {
	list: ListName;
	scope: string;
	expiresAt: string | null;
}

/**
 * The list, scope and expiry of each entry of `emails` that applies at `now`, grouped by address:
 * all a check needs. A reason (up to 4,096 characters, which D1's answer may write as `\u0001`,
 * six bytes each) and the other details are left in D1.
 */
export async function readEntryScopes(
	db: D1Database,
	emails: readonly string[],
	now: number,
): Promise<Map<string, EntryScope[]>> {
	const { results } = await db
		.prepare(
			`SELECT email, list, scope, expires_at AS expiresAt FROM suppressions
			WHERE email IN (SELECT value FROM json_each(?1)) AND (expires_at IS NULL OR expires_at > ?2)`,
		)
		.bind(JSON.stringify(emails), now)
		.all<{ email: string; list: ListName; scope: string; expiresAt: number | null }>();
	const byEmail = new Map<string, EntryScope[]>();
	for (const row of results) {
		const entries = byEmail.get(row.email) ?? [];
		entries.push({
			list: row.list,
			scope: row.scope,
			expiresAt: row.expiresAt === null ? null : isoTime(row.expiresAt),
		});
		byEmail.set(row.email, entries);
	}
	return byEmail;
}
