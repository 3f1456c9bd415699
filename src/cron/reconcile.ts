import { edgeKey, KV_BATCH, renderEdgeValue, writeEdge } from "../suppressions/edge";
import {
	listAddresses,
	readCronState,
	retireExpired,
	writeCronState,
} from "../suppressions/expiry-store";
import { readEntries } from "../suppressions/store";

/** What one reconcile run did, and whether it reached the end of its sweeps. */
export interface ReconcileResult {
	expired: number;
	checked: number;
	fixed: number;
	done: boolean;
}

const D1_CURSOR = "reconcile.d1";
const KV_CURSOR = "reconcile.kv";

/**
 * Makes the KV edge copy match D1, a bounded batch per run, going on where the last run stopped:
 * retires expired entries (recording them in the history), puts missing or stale keys for a batch
 * of addresses that have entries, and deletes keys of a batch of KV keys whose address has no
 * live entry. A run that dies half way leaves D1 consistent (each step is one transaction) and KV
 * no worse; the next run redoes the batch.
 */
export async function reconcile(
	env: Env,
	now: number,
	batchSize: number,
): Promise<ReconcileResult> {
	const retired = await retireExpired(env.DB, now, batchSize);

	const after = await readCronState(env.DB, D1_CURSOR);
	const addresses = await listAddresses(env.DB, after, batchSize);
	const d1Done = addresses.length < batchSize;
	const toCheck = [...new Set([...retired, ...addresses])];
	let fixed = await repairKeys(env, toCheck, now);

	const kvCursor = await readCronState(env.DB, KV_CURSOR);
	const listed = await env.SUPPRESSIONS.list<{ email?: string }>({
		limit: Math.min(batchSize, 1000),
		...(kvCursor ? { cursor: kvCursor } : {}),
	});
	fixed += await deleteOrphans(env, listed.keys, now);

	await env.DB.batch([
		writeCronState(env.DB, D1_CURSOR, d1Done ? "" : (addresses[addresses.length - 1] ?? "")),
		writeCronState(env.DB, KV_CURSOR, listed.list_complete ? "" : listed.cursor),
	]);
	return {
		expired: retired.length,
		checked: toCheck.length + listed.keys.length,
		fixed,
		done: d1Done && listed.list_complete && retired.length < batchSize,
	};
}

/** Puts or deletes the keys of `emails` whose KV value differs from what D1 says. */
async function repairKeys(env: Env, emails: string[], now: number): Promise<number> {
	const entries = await readEntries(env.DB, emails, now);
	let fixed = 0;
	for (let i = 0; i < emails.length; i += KV_BATCH) {
		const batch = emails.slice(i, i + KV_BATCH);
		const keys = await Promise.all(batch.map(edgeKey));
		const values = await env.SUPPRESSIONS.get(keys, "text");
		for (const [j, email] of batch.entries()) {
			const live = entries.get(email) ?? [];
			const expected = live.length > 0 ? renderEdgeValue(live) : null;
			if ((values.get(keys[j] as string) ?? null) !== expected) {
				await writeEdge(env.SUPPRESSIONS, email, live, now);
				fixed++;
			}
		}
	}
	return fixed;
}

/** Deletes listed KV keys whose address has no live entry in D1. */
async function deleteOrphans(
	env: Env,
	keys: ReadonlyArray<{ name: string; metadata?: { email?: string } }>,
	now: number,
): Promise<number> {
	const owners = keys.map((key) =>
		key.name.startsWith("s:") ? key.name.slice(2) : (key.metadata?.email ?? null),
	);
	const emails = owners.filter((email): email is string => email !== null);
	const entries = await readEntries(env.DB, emails, now);
	let fixed = 0;
	for (const [i, key] of keys.entries()) {
		const email = owners[i];
		// Keys this service did not write are left alone.
		if (!key.name.startsWith("s:") && !key.name.startsWith("h:")) continue;
		if (email && entries.has(email)) continue;
		await env.SUPPRESSIONS.delete(key.name);
		fixed++;
	}
	return fixed;
}
