import type { PolicySettings } from "../config";
import { MAX_UNIX_SECONDS } from "../tencent/schema";
import { INSERT_COLUMNS } from "./store";
import { jsonChunks } from "./transfer-store";

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
