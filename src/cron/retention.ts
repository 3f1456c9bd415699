import { deleteEventsBefore, deleteRejectedBefore } from "../events/retention-store";

const DAY = 86_400;
/** Statements one run may spend: D1 runs one query at a time per database, so keep each short. */
const MAX_BATCHES = 10;

/** What one retention run deleted, and whether nothing old is left. */
export interface RetentionResult {
	deleted: number;
	rejectedDeleted: number;
	done: boolean;
}

/**
 * Deletes events older than `eventDays` (by arrival) and rejected callbacks older than
 * `rejectedDays`, in batches of `batchSize` rows, at most a few batches per run; the next run
 * goes on. Rollups, suppression entries and their history stay.
 */
export async function pruneStorage(
	db: D1Database,
	now: number,
	settings: { eventDays: number; rejectedDays: number; batchSize: number },
): Promise<RetentionResult> {
	const eventCutoff = now - settings.eventDays * DAY;
	let deleted = 0;
	let done = false;
	for (let batch = 0; batch < MAX_BATCHES && !done; batch++) {
		const count = await deleteEventsBefore(db, eventCutoff, settings.batchSize);
		deleted += count;
		done = count < settings.batchSize;
	}
	const rejectedDeleted = await deleteRejectedBefore(
		db,
		now - settings.rejectedDays * DAY,
		settings.batchSize,
	);
	return { deleted, rejectedDeleted, done: done && rejectedDeleted < settings.batchSize };
}
