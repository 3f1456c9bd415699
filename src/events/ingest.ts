import type { PolicySettings } from "../config";
import { ApiError } from "../errors";
import { log } from "../log";
import { EDGE_SYNC_AT_ONCE, syncEdge } from "../suppressions/edge";
import {
	edgeKey,
	KV_BATCH,
	MAX_EDGE_VALUE_BYTES,
	renderEdgeValue,
} from "../suppressions/edge-format";
import type { StoredEntry } from "../suppressions/entry";
import { applyEvidence } from "../suppressions/evidence-store";
import { evidenceFrom, softBounceAddresses } from "../suppressions/policy";
import { recheckSoftBounces, recomputeSoftBounces } from "../suppressions/soft-bounce-store";
import { groupEntries, selectEntries } from "../suppressions/store";
import type { StoredEvent } from "./event";
import { insertEvents } from "./store";

/** What {@link storeCallback} did. */
export interface StoredCallback {
	/** Events that were new. */
	stored: number;
	/** Addresses whose entries changed. */
	changed: Set<string>;
	/**
	 * Addresses of bounces, spam reports and unsubscribes already stored, which this request did not
	 * change. D1 may commit a batch and still fail to answer it ("Network connection lost"): the
	 * callback answers 503 and writes no key, and the redelivery changes nothing, so their keys are
	 * checked ({@link syncCallbackEdge}) rather than left to the cron while KV calls them
	 * deliverable.
	 */
	resent: string[];
	/**
	 * The live entries of changed and resent addresses as the callback's own transaction left them
	 * (an empty list when none is left), for the addresses that transaction read back; the edge
	 * sync reads the others.
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
	const inserted = (results[at.insert]?.results ?? []) as { id: string; recheck: string | null }[];
	const changed = new Set<string>();
	results.slice(first.length, at.read).forEach((result, i) => {
		if (first.length + i === at.insert) return; // ids, not changed addresses
		for (const row of result.results as { email: string }[]) changed.add(row.email);
	});
	const read = groupEntries((results[at.read]?.results ?? []) as StoredEntry[]);
	const entries = new Map<string, StoredEntry[]>();
	for (const email of changed) entries.set(email, read.get(email) ?? []);
	// A redelivered event that may suppress: its first delivery may have committed without an
	// answer, which wrote no key.
	const storedIds = new Set(inserted.map((row) => row.id));
	const evidenceIds = new Set(evidence.map((item) => item.eventId));
	const resent = new Set<string>();
	for (const event of events) {
		const suppressing = evidenceIds.has(event.id) || event.event === "bounce";
		if (suppressing && !storedIds.has(event.id) && !changed.has(event.email)) {
			resent.add(event.email);
			entries.set(event.email, read.get(event.email) ?? []);
		}
	}

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
	return {
		stored: inserted.length,
		changed,
		resent: [...resent].filter((email) => !changed.has(email)),
		entries,
	};
}

/**
 * Brings a stored callback's KV keys up to date, after its answer: those of the addresses it
 * changed, and those of its resent addresses whose key differs from what D1 holds (bulk reads of
 * 100 keys; a redelivery after a 200 finds its keys right and writes none). Resent addresses
 * beyond what the request writes itself, or whose keys cannot be read, go to the edge sync as if
 * stale. Never throws.
 */
export async function syncCallbackEdge(
	env: Env,
	{ changed, resent, entries }: StoredCallback,
	now: number,
	requestId: string,
): Promise<void> {
	const room = Math.max(0, EDGE_SYNC_AT_ONCE - changed.size);
	const checked = resent.slice(0, room);
	let stale = checked;
	try {
		stale = await staleKeys(env.SUPPRESSIONS, checked, entries);
	} catch (error) {
		log("warn", "edge read failed, writing the keys", { requestId, error: String(error) });
	}
	const emails = [...changed, ...stale, ...resent.slice(room)];
	if (emails.length > 0) await syncEdge(env, emails, now, requestId, entries);
}

/** Those of `emails` whose KV value is not what their `known` entries render. Throws what KV throws. */
async function staleKeys(
	kv: KVNamespace,
	emails: readonly string[],
	known: ReadonlyMap<string, readonly StoredEntry[]>,
): Promise<string[]> {
	const stale: string[] = [];
	for (let i = 0; i < emails.length; i += KV_BATCH) {
		const batch = emails.slice(i, i + KV_BATCH);
		const keys = await Promise.all(batch.map(edgeKey));
		const values = await kv.get(keys, "text");
		batch.forEach((email, j) => {
			const live = known.get(email) ?? [];
			const expected = live.length > 0 ? renderEdgeValue(live) : null;
			if ((values.get(keys[j] as string) ?? null) !== expected) stale.push(email);
		});
	}
	return stale;
}

/** Seconds a sender should wait before retrying after a storage failure. */
const RETRY_AFTER_SECONDS = 30;

/**
 * 503 with Retry-After: nothing was acknowledged, so the sender may send the same request again.
 * D1 may have committed the batch all the same (its answer lost); the retry then finds the events
 * stored and counts them as duplicates.
 */
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
