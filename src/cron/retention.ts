import { deleteEventsBefore, deleteRejectedBefore } from "../events/retention-store";
import { ROLLUP_BATCH, rollUpEvents } from "../events/stats-store";

const DAY = 86_400;
/**
 * Batches the rollup, and the deletes of events, may each spend in one run (the rejected callbacks
 * take one statement more): D1 runs one query at a time per database, so keep each short.
 */
const MAX_BATCHES = 10;

/** What one retention run counted and deleted, and whether nothing old is left. */
export interface RetentionResult {
	/** The highest event seq the daily rollups now count. */
	countedTo: number;
	deleted: number;
	rejectedDeleted: number;
	done: boolean;
}

/**
 * Counts the events stored since the last run into the daily rollups, then deletes events older
 * than `eventDays` (by arrival; only counted ones) and rejected callbacks older than
 * `rejectedDays`, in batches of `batchSize` rows, at most a few batches per run; the next run
 * goes on. Rollups, suppression entries and their history stay.
 */
export async function pruneStorage(
	db: D1Database,
	now: number,
	settings: { eventDays: number; rejectedDays: number; batchSize: number },
): Promise<RetentionResult> {
	let countedTo = 0;
	let counted = false;
	for (let batch = 0; batch < MAX_BATCHES && !counted; batch++) {
		const [, marked] = await db.batch<{ mark: number; top: number }>(
			rollUpEvents(db, ROLLUP_BATCH),
		);
		const row = marked?.results[0];
		countedTo = row?.mark ?? 0;
		counted = !row || row.mark >= row.top;
	}
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
	return {
		countedTo,
		deleted,
		rejectedDeleted,
		done: counted && done && rejectedDeleted < settings.batchSize,
	};
}
