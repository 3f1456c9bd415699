import { COUNTED, lowerRollupMark } from "./stats-store";

/**
 * Deletes at most `limit` events that arrived before `cutoff` (Unix seconds), oldest first, and
 * only events the daily rollups already count. `seq` grows with arrival, so the oldest rows are
 * the first `limit` of the rowid, and only those are read: an event that arrived seconds out of
 * order waits for the next run, and a run with little to delete does not read the whole table.
 * The events of an address queued for a soft-bounce recheck stay until the reconcile has decided
 * it: the recheck reads them, and retention runs first in a cron run, so after the cron stopped
 * for a while it would delete the run's bounces a late delivery broke, and the entry would stand.
 * Returns how many were deleted.
 */
export async function deleteEventsBefore(
	db: D1Database,
	cutoff: number,
	limit: number,
): Promise<number> {
	const [deleted] = await db.batch([
		db
			.prepare(
				`DELETE FROM events WHERE seq IN (SELECT seq FROM (
					SELECT seq, received_at, email FROM events WHERE ${COUNTED} ORDER BY seq LIMIT ?2)
					WHERE received_at < ?1 AND email NOT IN (SELECT email FROM soft_bounce_recheck))`,
			)
			.bind(cutoff, limit),
		lowerRollupMark(db),
	]);
	return deleted?.meta.changes ?? 0;
}

/**
 * Deletes at most `limit` rejected callbacks received before `cutoff`. Counted with RETURNING:
 * `meta.changes` would also count migration 0011's trigger, which updates the running total.
 */
export async function deleteRejectedBefore(
	db: D1Database,
	cutoff: number,
	limit: number,
): Promise<number> {
	const { results } = await db
		.prepare(
			`DELETE FROM rejected_callbacks WHERE id IN (
				SELECT id FROM rejected_callbacks WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)
			RETURNING 1`,
		)
		.bind(cutoff, limit)
		.run();
	return results.length;
}
