/** One rollup row: events of one type (and bounce type) on one UTC day. */
export interface RollupRow {
	/** Days since 1970-01-01 (UTC). */
	day: number;
	event: string;
	bounceType: string;
	count: number;
}

// The highest `events.seq` already counted in daily_stats (0 before the first count). Events
// above it are counted at read time. A new event gets seq = max(seq) + 1, so after deleting the
// newest events the mark must come down to the new max(seq), or a reused seq would never be
// counted: every statement that deletes events runs `lowerRollupMark` in its batch.
const MARK = "coalesce((SELECT CAST(value AS INTEGER) FROM cron_state WHERE name = 'rollup'), 0)";

// The rollup key of an event row: UTC day, sender domain ('' when unknown), event type, and the
// bounce type for bounces ('' otherwise).
const KEY = `occurred_at / 86400 AS day, coalesce(from_domain, '') AS from_domain, event,
	iif(event = 'bounce', coalesce(bounce_type, ''), '') AS bounce_type`;

/**
 * Statements that count at most `limit` events above the mark into daily_stats and move the mark
 * past them, to run together in one batch (so an event is counted exactly once). The second
 * returns the new `mark` and the `top` seq: counting is done when they are equal.
 */
export function rollUpEvents(db: D1Database, limit: number): D1PreparedStatement[] {
	return [
		db
			.prepare(
				`INSERT INTO daily_stats (day, from_domain, event, bounce_type, count)
				SELECT day, from_domain, event, bounce_type, count(*) FROM (
					SELECT ${KEY} FROM events WHERE seq > ${MARK} AND seq <= ${MARK} + ?1)
				GROUP BY day, from_domain, event, bounce_type
				ON CONFLICT (day, from_domain, event, bounce_type) DO UPDATE SET
					count = count + excluded.count`,
			)
			.bind(limit),
		db
			.prepare(
				`INSERT INTO cron_state (name, value)
				VALUES ('rollup', CAST(max(${MARK}, min(${MARK} + ?1,
					coalesce((SELECT max(seq) FROM events), 0))) AS TEXT))
				ON CONFLICT (name) DO UPDATE SET value = excluded.value
				RETURNING CAST(value AS INTEGER) AS mark,
					coalesce((SELECT max(seq) FROM events), 0) AS top`,
			)
			.bind(limit),
	];
}

/**
 * Counts the address's events above the mark into daily_stats, for a batch that then deletes them
 * (an erasure): the events left above the mark stay uncounted, as the mark says, so the cron counts
 * them as ever. Reads only the address's events, however many others wait for the cron.
 */
export function rollUpAddress(db: D1Database, email: string): D1PreparedStatement {
	return db
		.prepare(
			`INSERT INTO daily_stats (day, from_domain, event, bounce_type, count)
			SELECT day, from_domain, event, bounce_type, count(*) FROM (
				SELECT ${KEY} FROM events WHERE email = ?1 AND seq > ${MARK})
			GROUP BY day, from_domain, event, bounce_type
			ON CONFLICT (day, from_domain, event, bounce_type) DO UPDATE SET
				count = count + excluded.count`,
		)
		.bind(email);
}

/** After events were deleted: the mark comes down to the highest seq left (see MARK). */
export function lowerRollupMark(db: D1Database): D1PreparedStatement {
	return db.prepare(
		`UPDATE cron_state SET value = CAST(min(CAST(value AS INTEGER),
			coalesce((SELECT max(seq) FROM events), 0)) AS TEXT) WHERE name = 'rollup'`,
	);
}

/** The condition that keeps a delete from removing events not yet counted. */
export const COUNTED = `seq <= ${MARK}`;

/** Events one statement of the cron counts at most (a run makes up to 10 such statements). */
export const ROLLUP_BATCH = 50_000;

/**
 * Counts for the days `fromDay` (inclusive) to `toDay` (exclusive), for one sender domain or
 * all, summed over domains: the rollups, which cost a row per day, sender domain and event type
 * however many events there were, plus the events stored since the cron last counted (a few
 * minutes' worth).
 */
export async function readRollups(
	db: D1Database,
	fromDay: number,
	toDay: number,
	fromDomain?: string,
): Promise<RollupRow[]> {
	// One domain's rollups are read by daily_stats_by_domain (migration 0013), not by the day
	// range of every domain's.
	const { results } = await db
		.prepare(
			`SELECT day, event, bounce_type AS bounceType, sum(count) AS count FROM (
				SELECT day, from_domain, event, bounce_type, count FROM daily_stats
				WHERE day >= ?1 AND day < ?2${fromDomain === undefined ? "" : " AND from_domain = ?3"}
				UNION ALL
				SELECT ${KEY}, 1 AS count FROM events WHERE seq > ${MARK}
			)
			WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR from_domain = ?3)
			GROUP BY day, event, bounce_type ORDER BY day`,
		)
		.bind(fromDay, toDay, fromDomain ?? null)
		.all<RollupRow>();
	return results;
}
