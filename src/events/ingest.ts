import type { PolicySettings } from "../config";
import { ApiError } from "../errors";
import { log } from "../log";
import { MAX_EDGE_VALUE_BYTES } from "../suppressions/edge";
import type { StoredEntry } from "../suppressions/entry";
import { evidenceFrom, softBounceAddresses } from "../suppressions/policy";
import {
	applyEvidence,
	groupEntries,
	recheckSoftBounces,
	recomputeSoftBounces,
	selectEntries,
} from "../suppressions/store";
import type { StoredEvent } from "./event";
import { insertEvents } from "./store";

/** What {@link storeCallback} did. */
export interface StoredCallback {
	/** Events that were new. */
	stored: number;
	/** Addresses whose entries changed. */
	changed: Set<string>;
	/**
	 * The live entries of changed addresses as the callback's own transaction left them (an empty
	 * list when none is left), for the addresses that transaction read back; the edge sync reads
	 * the others.
	 */
	entries: Map<string, StoredEntry[]>;
}

/**
 * Stores the events and the suppression entries they change in one `DB.batch()`: one round trip,
 * one transaction. Evidence goes first, so it can skip events already stored; the soft-bounce
 * recompute goes after the insert, so it sees the request's own events; a callback that may
 * change entries reads the entries of those addresses back last, so the edge sync needs no round
 * trip of its own. Returns how many events were new and which addresses' entries changed.
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
	/** Statements to run first, in the same transaction (a replay's mark). */
	first: D1PreparedStatement[] = [],
): Promise<StoredCallback> {
	const evidence = evidenceFrom(events, policy);
	const bounced = softBounceAddresses(events);
	const mayChange = [...new Set([...evidence.map((item) => item.email), ...bounced])];
	const statements = [
		...first,
		...(evidence.length > 0 ? [applyEvidence(db, evidence, now)] : []),
		insertEvents(db, events),
		...(bounced.length > 0 ? [recomputeSoftBounces(db, bounced, policy, now)] : []),
		...(mayChange.length > 0 ? [selectEntries(db, mayChange, now, MAX_EDGE_VALUE_BYTES)] : []),
	];
	const results = await db.batch(statements);
	const at = {
		insert: first.length + (evidence.length > 0 ? 1 : 0),
		read: mayChange.length > 0 ? statements.length - 1 : statements.length,
	};
	const inserted = (results[at.insert]?.results ?? []) as { recheck: string | null }[];
	const changed = new Set<string>();
	results.slice(first.length, at.read).forEach((result, i) => {
		if (first.length + i === at.insert) return; // ids, not changed addresses
		for (const row of result.results as { email: string }[]) changed.add(row.email);
	});
	const read = groupEntries((results[at.read]?.results ?? []) as StoredEntry[]);
	const entries = new Map<string, StoredEntry[]>();
	for (const email of changed) entries.set(email, read.get(email) ?? []);

	const recheck = new Set<string>();
	for (const row of inserted) if (row.recheck) recheck.add(row.recheck);
	if (recheck.size > 0) {
		try {
			for (const email of await recheckSoftBounces(db, [...recheck], policy, now)) {
				changed.add(email);
				// Changed after the read above: the edge sync reads it again.
				entries.delete(email);
			}
		} catch (error) {
			log("warn", "soft-bounce recheck left to the cron", { requestId, error: String(error) });
		}
	}
	return { stored: inserted.length, changed, entries };
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
