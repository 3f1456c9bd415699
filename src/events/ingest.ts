import type { PolicySettings } from "../config";
import { ApiError } from "../errors";
import { log } from "../log";
import { evidenceFrom, softBounceAddresses } from "../suppressions/policy";
import { applyEvidence, recheckSoftBounces, recomputeSoftBounces } from "../suppressions/store";
import type { StoredEvent } from "./event";
import { insertEvents } from "./store";

/**
 * Stores the events and the suppression entries they change in one `DB.batch()`: one round trip,
 * one transaction. Evidence goes first, so it can skip events already stored; the soft-bounce
 * recompute goes last, so it sees the request's own events. Returns how many events were new and
 * which addresses' entries changed.
 *
 * A delivery to an address with a live soft-bounce entry (rare: such addresses are not mailed) is
 * decided again in a second round trip. The first one queued the address in the same transaction
 * as the delivery, so if the second fails the callback still succeeds (its events are stored) and
 * the reconcile cron decides it instead.
 */
export async function storeCallback(
	db: D1Database,
	events: StoredEvent[],
	policy: PolicySettings,
	now: number,
	requestId: string,
): Promise<{ stored: number; changed: Set<string> }> {
	const evidence = evidenceFrom(events, policy);
	const bounced = softBounceAddresses(events);
	const insert = insertEvents(db, events);
	const before = evidence.length > 0 ? [applyEvidence(db, evidence, now)] : [];
	const after = bounced.length > 0 ? [recomputeSoftBounces(db, bounced, policy, now)] : [];
	const results = await db.batch<{ id?: string; email?: string; recheck?: string | null }>([
		...before,
		insert,
		...after,
	]);
	const inserted = results[before.length]?.results ?? [];
	const recheck = new Set<string>();
	for (const row of inserted) if (row.recheck) recheck.add(row.recheck);
	const changed = new Set<string>();
	for (const [i, result] of results.entries()) {
		if (i === before.length) continue; // the insert: ids, not changed addresses
		for (const row of result.results) if (row.email) changed.add(row.email);
	}
	if (recheck.size > 0) {
		try {
			for (const email of await recheckSoftBounces(db, [...recheck], policy, now)) {
				changed.add(email);
			}
		} catch (error) {
			log("warn", "soft-bounce recheck left to the cron", { requestId, error: String(error) });
		}
	}
	return { stored: inserted.length, changed };
}

/** Seconds a sender should wait before retrying after a storage failure. */
const RETRY_AFTER_SECONDS = 30;

/** 503 with Retry-After: nothing was stored, so the sender may send the same request again. */
export function storageUnavailable(): ApiError {
	return new ApiError(
		503,
		"storage_unavailable",
		"Storage is unavailable; retry later",
		undefined,
		{
			"Retry-After": String(RETRY_AFTER_SECONDS),
		},
	);
}
