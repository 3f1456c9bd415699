import { log } from "../log";
import { edgeKey, IN_D1, MAX_EDGE_VALUE_BYTES, renderEdgeValue } from "./edge-format";
import { markEdgeLagging } from "./edge-lag";
import type { StoredEntry } from "./entry";
import { readEntries } from "./store";

/**
 * KV refuses an expiration less than 60 seconds ahead of its own clock, measured from the write
 * (see {@link writeEdge}); keys get a minute more, for a clock that differs from KV's. A key that
 * outlives its entries is harmless: lookups check each entry's expiry.
 */
const MIN_KV_TTL = 120;
/**
 * The most addresses whose keys one request writes itself (a callback, a replay, an import).
 * A Worker invocation may make 1,000 operations to KV and D1 together, and a callback at
 * MAX_EVENTS_PER_REQUEST 1000 may change 1,000 addresses: a put for each after its D1 batch
 * went past that, and the writes must also end within the 30 seconds `waitUntil` lasts after the
 * answer, six connections at a time. Every change also queues its address (migration 0010), so
 * the reconcile cron writes the rest.
 */
export const EDGE_SYNC_AT_ONCE = 400;
/** KV takes an expiration as a 32-bit integer: Unix seconds up to 2038-01-19T03:14:07Z. */
const MAX_KV_EXPIRATION = 2 ** 31 - 1;

/**
 * When the KV key can simply expire: the moment its last entry expires, if every entry expires
 * before KV's latest expiration. A key that cannot expire with its entries never expires; the
 * cron deletes it once they have (it retires expired entries and checks their addresses' keys).
 */
function edgeExpiration(entries: readonly StoredEntry[], now: number): number | undefined {
	if (entries.some((entry) => entry.expiresAt === null)) return undefined;
	const last = Math.max(...entries.map((entry) => entry.expiresAt ?? 0), now + MIN_KV_TTL);
	return last <= MAX_KV_EXPIRATION ? last : undefined;
}

/**
 * Marks KV as lagging (edge-lag.ts) for the keys a request leaves to the cron, logging a failure:
 * the keys stay queued in D1 either way.
 */
export async function markLagging(env: Env, now: number, requestId?: string): Promise<void> {
	try {
		await markEdgeLagging(env.SUPPRESSIONS, now);
	} catch (error) {
		log("warn", "edge lag mark failed", { requestId, error: String(error) });
	}
}

/**
 * Makes the KV copy of each address match D1 (the first {@link EDGE_SYNC_AT_ONCE} of them; the
 * cron the others, which their change queued, with KV marked as lagging until it has): puts its
 * live entries, or deletes the key when none applies. Entries come from `known` when it has the
 * address (a callback's own transaction read them back), else from one read of D1. KV takes one write per key per second and may fail; a
 * failure is logged and left to the reconcile cron, never thrown, because the truth is already in
 * D1.
 */
export async function syncEdge(
	env: Env,
	changed: readonly string[],
	now: number,
	requestId?: string,
	known: ReadonlyMap<string, readonly StoredEntry[]> = new Map(),
): Promise<{ written: number; deleted: number; failed: number }> {
	const counts = { written: 0, deleted: 0, failed: 0 };
	const emails = changed.slice(0, EDGE_SYNC_AT_ONCE);
	const overflow = emails.length < changed.length;
	if (overflow) await markLagging(env, now, requestId);
	const unknown = emails.filter((email) => !known.has(email));
	let entries: ReadonlyMap<string, readonly StoredEntry[]> = known;
	if (unknown.length > 0) {
		try {
			entries = new Map([
				...known,
				...(await readEntries(env.DB, unknown, now, MAX_EDGE_VALUE_BYTES)),
			]);
		} catch (error) {
			log("error", "edge sync could not read D1", { requestId, error: String(error) });
			await markLagging(env, now, requestId);
			return { ...counts, failed: emails.length };
		}
	}
	let firstError = "";
	const written: EdgeWrites = new Map();
	await Promise.all(
		emails.map(async (email) => {
			const live = entries.get(email) ?? [];
			try {
				written.set(email, await writeEdge(env.SUPPRESSIONS, email, live, now));
				if (live.length > 0) counts.written++;
				else counts.deleted++;
			} catch (error) {
				counts.failed++;
				firstError ||= String(error);
			}
		}),
	);
	// One line for the request, however many writes failed (a Worker's logs hold 128 KB per
	// invocation).
	if (counts.failed > 0) {
		log("warn", "edge write failed", { requestId, failed: counts.failed, error: firstError });
		await markLagging(env, now, requestId);
	} else if (!overflow) await markIfOvertaken(env, written, now, requestId);
	return counts;
}

/** What a writer put in addresses' KV keys: each address's value, or null for a deleted key. */
export type EdgeWrites = Map<string, string | null>;

/**
 * Whether D1 has moved on from what a writer just put in KV: an address whose entries, read again
 * now, render otherwise. The writer read D1 before its writes, and a change between that read and
 * a write (a callback's, a PUT's) may have had its own write land first, only to be overwritten
 * with the older entries. The change queued its address (migration 0010), so the cron repairs the
 * key, but not before KV_WRITE_SETTLE_SECONDS and its next run: minutes in which KV might call a
 * just-suppressed address deliverable. Read after the writes have landed, a change made later
 * writes its own key after them. Throws what D1 throws.
 */
export async function writesOvertaken(
	db: D1Database,
	written: EdgeWrites,
	now: number,
): Promise<boolean> {
	const entries = await readEntries(db, [...written.keys()], now, MAX_EDGE_VALUE_BYTES);
	for (const [email, value] of written) {
		const live = entries.get(email) ?? [];
		if ((live.length > 0 ? renderEdgeValue(live) : null) !== value) return true;
	}
	return false;
}

/**
 * Marks KV as lagging when D1 has moved on from what a request just wrote to it
 * ({@link writesOvertaken}), or when D1 cannot tell: lookups then read D1 for what KV would call
 * deliverable until the cron has repaired the keys.
 */
export async function markIfOvertaken(
	env: Env,
	written: EdgeWrites,
	now: number,
	requestId?: string,
): Promise<void> {
	if (written.size === 0) return;
	let overtaken = true;
	try {
		overtaken = await writesOvertaken(env.DB, written, now);
	} catch (error) {
		log("warn", "edge write check could not read D1", { requestId, error: String(error) });
	}
	if (overtaken) await markLagging(env, now, requestId);
}

/**
 * Puts or deletes one address's KV key so that it holds exactly `live`; returns the value put, or
 * null when it deleted the key.
 */
export async function writeEdge(
	kv: KVNamespace,
	email: string,
	live: readonly StoredEntry[],
	now: number,
): Promise<string | null> {
	const key = await edgeKey(email);
	if (live.length === 0) {
		await kv.delete(key);
		return null;
	}
	const value = renderEdgeValue(live);
	// `now` decides which entries apply, but the write may come long after it: a cron run's `now`
	// is its scheduled time, and its writes follow retention and up to 900 KV operations. KV
	// measures the expiration's minute from the write, so the key's floor does too.
	const writtenAt = Math.max(now, Math.floor(Date.now() / 1000));
	// The marker's entries may have been read only in part (readEntries' `upTo`): an expiry
	// worked out from them could drop the key while an unread entry still applies, and a missing
	// key reads as no entries. The cron deletes the key once no entry applies.
	const expiration = value === IN_D1 ? undefined : edgeExpiration(live, writtenAt);
	await kv.put(key, value, {
		...(expiration === undefined ? {} : { expiration }),
		...(key.startsWith("h:") ? { metadata: { email } } : {}),
	});
	return value;
}
