import type { PolicySettings } from "../config";
import { edgeKey, KV_BATCH, renderEdgeValue, writeEdge } from "../suppressions/edge";
import {
	listAddresses,
	readCronState,
	retireExpired,
	writeCronState,
} from "../suppressions/expiry-store";
import { readEntries, readSoftBounceRecheck, recheckSoftBounces } from "../suppressions/store";
import { clearPending, readPending } from "../suppressions/transfer-store";

/** What one reconcile run did, and whether it reached the end of its sweeps. */
export interface ReconcileResult {
	/** Soft-bounce entries decided again that a callback left queued. */
	rechecked: number;
	expired: number;
	checked: number;
	fixed: number;
	done: boolean;
}

const STATE = "reconcile";

/**
 * Where the two sweeps of a cycle stand: the last address checked in D1 and the KV list cursor,
 * or `true` once that sweep reached its end. A cycle is done when both have.
 */
interface SweepState {
	d1: string | true;
	kv: string | true;
}

function parseState(raw: string): SweepState {
	try {
		const value: unknown = JSON.parse(raw);
		if (value && typeof value === "object" && "d1" in value && "kv" in value) {
			const { d1, kv } = value;
			if ((typeof d1 === "string" || d1 === true) && (typeof kv === "string" || kv === true)) {
				return { d1, kv };
			}
		}
	} catch {
		// No state yet, or unreadable: start a new cycle.
	}
	return { d1: "", kv: "" };
}

/**
 * Makes the KV edge copy match D1, a bounded batch per run, going on where the last run stopped:
 * decides again the soft-bounce entries a callback left queued (migration 0007), retires expired
 * entries (recording them in the history), puts missing or stale keys for a batch
 * of addresses that have entries, and deletes keys of a batch of KV keys whose address has no
 * live entry. A run that dies half way leaves D1 consistent (each step is one transaction) and KV
 * no worse; the next run redoes the batch, since the position is saved only at the end.
 */
export async function reconcile(
	env: Env,
	now: number,
	batchSize: number,
	policy: PolicySettings,
): Promise<ReconcileResult> {
	const queued = await readSoftBounceRecheck(env.DB, batchSize);
	const rechecked = queued.length > 0 ? await recheckSoftBounces(env.DB, queued, policy, now) : [];
	const retired = await retireExpired(env.DB, now, batchSize);
	const drained = await drainPending(env, now, batchSize);
	const state = parseState(await readCronState(env.DB, STATE));

	let addresses: string[] = [];
	if (state.d1 !== true) {
		addresses = await listAddresses(env.DB, state.d1, batchSize);
		state.d1 = addresses.length < batchSize ? true : (addresses[addresses.length - 1] ?? true);
	}
	const toCheck = [...new Set([...rechecked, ...retired, ...addresses])];
	let fixed = drained.fixed + (await repairKeys(env, toCheck, now));

	let listedCount = 0;
	if (state.kv !== true) {
		const listed = await env.SUPPRESSIONS.list<{ email?: string }>({
			limit: Math.min(batchSize, 1000),
			...(state.kv ? { cursor: state.kv } : {}),
		});
		fixed += await deleteOrphans(env, listed.keys, now);
		listedCount = listed.keys.length;
		state.kv = listed.list_complete ? true : listed.cursor;
	}

	const done =
		state.d1 === true &&
		state.kv === true &&
		queued.length < batchSize &&
		retired.length < batchSize &&
		drained.checked < batchSize;
	const next = done ? { d1: "", kv: "" } : state;
	await writeCronState(env.DB, STATE, JSON.stringify(next)).run();
	return {
		rechecked: queued.length,
		expired: retired.length,
		checked: drained.checked + toCheck.length + listedCount,
		fixed,
		done,
	};
}

/**
 * Brings the KV copy of queued addresses (an import's) up to date, at most `limit` of them, and
 * takes them off the queue.
 */
export async function drainPending(
	env: Env,
	now: number,
	limit: number,
): Promise<{ checked: number; fixed: number }> {
	const pending = await readPending(env.DB, limit);
	if (pending.length === 0) return { checked: 0, fixed: 0 };
	const fixed = await repairKeys(env, pending, now);
	await clearPending(env.DB, pending);
	return { checked: pending.length, fixed };
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
