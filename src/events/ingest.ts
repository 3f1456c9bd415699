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
	const softEmails = softBounceAddresses(events);
	const statements = [
		...(evidence.length > 0 ? [applyEvidence(db, evidence, now)] : []),
		insertEvents(db, events),
		...(softEmails.length > 0 ? [recomputeSoftBounces(db, softEmails, policy, now)] : []),
	];
	const results = await db.batch<{ id?: string; email?: string }>(statements);
	const inserted = results[evidence.length > 0 ? 1 : 0];
	const changed = new Set<string>();
	for (const result of results) {
		if (result === inserted) continue;
		for (const row of result.results) if (row.email) changed.add(row.email);
	}
	return { stored: inserted?.results.length ?? 0, changed };
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
