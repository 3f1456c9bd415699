import type { PolicySettings } from "../config";
import { ApiError } from "../errors";
import { evidenceFrom, softBounceAddresses } from "../suppressions/policy";
import { applyEvidence, recomputeSoftBounces } from "../suppressions/store";
import type { StoredEvent } from "./event";
import { insertEvents } from "./store";

/**
 * Stores the events and the suppression entries they change in one `DB.batch()`: one round trip,
 * one transaction. Evidence goes first, so it can skip events already stored; the soft-bounce
 * recompute goes last, so it sees the request's own events. Returns how many events were new and
 * which addresses' entries changed.
 */
export async function storeCallback(
	db: D1Database,
	events: StoredEvent[],
	policy: PolicySettings,
	now: number,
): Promise<{ stored: number; changed: Set<string> }> {
	const evidence = evidenceFrom(events, policy);
	const soft = softBounceAddresses(events);
	const inserts = insertEvents(db, events);
	const before = evidence.length > 0 ? [applyEvidence(db, evidence, now)] : [];
	const after =
		soft.bounced.length + soft.delivered.length > 0
			? [recomputeSoftBounces(db, soft, policy, now)]
			: [];
	const results = await db.batch<{ id?: string; email?: string }>([
		...before,
		...inserts,
		...after,
	]);
	const end = before.length + inserts.length;
	let stored = 0;
	for (const result of results.slice(before.length, end)) stored += result.results.length;
	const changed = new Set<string>();
	for (const result of [...results.slice(0, before.length), ...results.slice(end)]) {
		for (const row of result.results) if (row.email) changed.add(row.email);
	}
	return { stored, changed };
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
