import { type EdgeWrites, writeEdge } from "../suppressions/edge";
import {
	edgeKey,
	hashedKeyOwner,
	KV_BATCH,
	MAX_EDGE_VALUE_BYTES,
	renderEdgeValue,
} from "../suppressions/edge-format";
import type { StoredEntry } from "../suppressions/entry";
import { readEntries } from "../suppressions/store";
import { clearPending, queuePending, readPending } from "../suppressions/transfer-store";

/**
 * How old a change must be before the cron checks its address's KV key: the request that made it
 * may write the key up to 30 seconds after its answer (`waitUntil`), and a KV read may return a
 * value up to 60 seconds old. Checked sooner, a late write could land, or still be unseen, after
 * the check and go unrepaired.
 */
export const KV_WRITE_SETTLE_SECONDS = 120;

/** Addresses whose entries one D1 query reads for a repair (a multiple of KV_BATCH). */
const ENTRIES_READ = 1000;

/** KV operations left to an invocation. */
export interface KvBudget {
	left: number;
}

/**
 * Brings the KV copy of queued addresses (each whose entries changed, migration 0010, and what an
 * earlier run had no budget for) up to date, oldest first, at most `limit` of them and as many as
 * `budget` allows, and takes those off the queue; only those last changed
 * {@link KV_WRITE_SETTLE_SECONDS} or more before `now`. `more` tells that some may stay queued:
 * the budget stopped it before the queue or the limit ran out, a write failed, or it read `limit`.
 */
export async function drainPending(
	env: Env,
	now: number,
	limit: number,
	budget: KvBudget,
	written: EdgeWrites,
): Promise<{
	checked: number;
	fixed: number;
	failed: number;
	error: string;
	more: boolean;
	emails: string[];
}> {
	const pending = await readPending(env.DB, limit, now - KV_WRITE_SETTLE_SECONDS);
	if (pending.length === 0)
		return { checked: 0, fixed: 0, failed: 0, error: "", more: false, emails: [] };
	const { checked, fixed, failed, error } = await repairKeys(
		env,
		pending.map((row) => row.email),
		now,
		budget,
		written,
	);
	// An address whose write failed stays queued, behind the others, for a later run to try again.
	const done = pending.slice(0, checked).filter((row) => !failed.includes(row.email));
	await clearPending(env.DB, done);
	await queuePending(env.DB, failed, now);
	// A full read may have left more behind it.
	return {
		checked,
		fixed,
		failed: failed.length,
		error,
		more: checked < pending.length || failed.length > 0 || pending.length === limit,
		emails: pending.slice(0, checked).map((row) => row.email),
	};
}

/**
 * Puts or deletes the keys of `emails` whose KV value differs from what D1 says, in order, a bulk
 * read of up to 100 at a time, while `budget` covers a read and a write for each address of the
 * next batch. Returns how many addresses it checked (a prefix of `emails`) and fixed, and those
 * whose write failed (KV refuses a second write to a key within a second), with the first error:
 * returned, not thrown, so that one refused key does not stop the rest, and for the caller's one
 * log line (a cron run may repair twice; a Worker's logs hold 128 KB per invocation, and in a KV
 * outage a line per write would push out the run's own). What it writes goes into `written` at once, which
 * it also returns: a caller that fails later still knows the keys it wrote.
 */
export async function repairKeys(
	env: Env,
	emails: string[],
	now: number,
	budget: KvBudget,
	written: EdgeWrites = new Map(),
): Promise<{
	checked: number;
	fixed: number;
	failed: string[];
	error: string;
	written: EdgeWrites;
}> {
	let checked = 0;
	let fixed = 0;
	const failed: string[] = [];
	let firstError = "";
	let entries = new Map<string, StoredEntry[]>();
	for (let i = 0; i < emails.length; i += KV_BATCH) {
		const batch = emails.slice(i, i + KV_BATCH);
		if (budget.left < 1 + batch.length) break;
		budget.left -= 1 + batch.length;
		// D1 is read ENTRIES_READ addresses at a time: few queries, and none the budget stops.
		if (i % ENTRIES_READ === 0)
			entries = await readEntries(
				env.DB,
				emails.slice(i, i + ENTRIES_READ),
				now,
				MAX_EDGE_VALUE_BYTES,
			);
		const keys = await Promise.all(batch.map(edgeKey));
		const values = await env.SUPPRESSIONS.get(keys, "text");
		for (const [j, email] of batch.entries()) {
			const live = entries.get(email) ?? [];
			const expected = live.length > 0 ? renderEdgeValue(live) : null;
			if ((values.get(keys[j] as string) ?? null) !== expected) {
				try {
					written.set(email, await writeEdge(env.SUPPRESSIONS, email, live, now));
					fixed++;
				} catch (error) {
					failed.push(email);
					firstError ||= String(error);
				}
			} else budget.left += 1; // the write it did not need
		}
		checked += batch.length;
	}
	return { checked, fixed, failed, error: firstError, written };
}

/**
 * Deletes listed KV keys whose address has no live entry in D1, adding them to `written`. An `h:`
 * key whose metadata does not name its address is left alone: it cannot be checked, and deleting a
 * live address's key would call it deliverable. Writers replace it whenever the address changes.
 */
export async function deleteOrphans(
	env: Env,
	keys: ReadonlyArray<{ name: string; metadata?: { email?: unknown } }>,
	now: number,
	written: EdgeWrites,
): Promise<number> {
	const owners = await Promise.all(
		keys.map((key) =>
			key.name.startsWith("s:")
				? key.name.slice(2)
				: key.name.startsWith("h:")
					? hashedKeyOwner(key.name, key.metadata)
					: null,
		),
	);
	const emails = owners.filter((email): email is string => email !== null);
	const entries = await readEntries(env.DB, emails, now, MAX_EDGE_VALUE_BYTES);
	let fixed = 0;
	for (const [i, key] of keys.entries()) {
		const email = owners[i];
		// Keys this service did not write, and `h:` keys it cannot check, are left alone.
		if (!email || entries.has(email)) continue;
		await env.SUPPRESSIONS.delete(key.name);
		written.set(email, null);
		fixed++;
	}
	return fixed;
}
