/** One rollup row: events of one type (and bounce type) on one UTC day. */
export interface RollupRow {
	/** Days since 1970-01-01 (UTC). */
	day: number;
	event: string;
	bounceType: string;
	count: number;
}

/**
 * Rollups for the days `fromDay` (inclusive) to `toDay` (exclusive), for one sender domain or
 * all, summed over domains. Reads O(days × event types) rows, however many events there were.
 */
export async function readRollups(
	db: D1Database,
	fromDay: number,
	toDay: number,
	fromDomain?: string,
): Promise<RollupRow[]> {
	const { results } = await db
		.prepare(
			`SELECT day, event, bounce_type AS bounceType, sum(count) AS count FROM daily_stats
			WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR from_domain = ?3)
			GROUP BY day, event, bounce_type ORDER BY day`,
		)
		.bind(fromDay, toDay, fromDomain ?? null)
		.all<RollupRow>();
	return results;
}
