import type { PolicySettings } from "../config";
import { log } from "../log";
import {
	type EdgeWrites,
	edgeKey,
	hashedKeyOwner,
	KV_BATCH,
	MAX_EDGE_VALUE_BYTES,
	markLagging,
	renderEdgeValue,
	writeEdge,
	writesOvertaken,
} from "../suppressions/edge";
import { edgeLagging } from "../suppressions/edge-lag";
import type { StoredEntry } from "../suppressions/entry";
import {
	listAddresses,
	readCronState,
	retireExpired,
	writeCronState,
} from "../suppressions/expiry-store";
import { readEntries, readSoftBounceRecheck, recheckSoftBounces } from "../suppressions/store";
import { clearPending, queuePending, readPending } from "../suppressions/transfer-store";

/** What one reconcile run did, and whether it reached the end of its sweeps. */
export interface ReconcileResult {
	/** Soft-bounce entries decided again that a callback left queued. */
	rechecked: number;
	/** Entries retired (an address may have several). */
	expired: number;
	checked: number;
	fixed: number;
	done: boolean;
}

const STATE = "reconcile";

/**
 * KV operations one cron run makes at most: Workers allow 1,000 per invocation, and a run that
 * went over would fail half way. What does not fit waits in `edge_pending` for the next run.
 */
export const KV_OPERATIONS_PER_RUN = 900;

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
 * live entry. It makes at most {@link KV_OPERATIONS_PER_RUN} KV operations: addresses it has no
 * budget for are queued in `edge_pending`, which the next run drains after its rechecks and
 * expiries, before its sweeps. Keys it leaves to a later run, or that a request changed under
 * its writes, mark KV as lagging (edge-lag.ts). A run that dies half way leaves D1 consistent
 * (each step is one transaction) and KV no worse; the next run redoes the batch, since the
 * position is saved only at the end.
 */
export async function reconcile(
	env: Env,
	now: number,
	batchSize: number,
	policy: PolicySettings,
): Promise<ReconcileResult> {
	const budget: KvBudget = { left: KV_OPERATIONS_PER_RUN };
	const lag = { marked: false };
	// One put a run at most, as KV takes one write per key per second.
	const mark = async () => {
		if (lag.marked) return;
		lag.marked = true;
		budget.left -= 2; // the read of the stored mark, and the put
		await markLagging(env, now);
	};
	const written: EdgeWrites = new Map();
	try {
		return await reconcileSteps(env, now, batchSize, policy, { budget, mark, written });
	} finally {
		// A request that changed an address after this run read it may have written its key before
		// this run did, which left the older entries there: the change queued the address for a
		// later run, and until then the mark sends lookups to D1. A run that fails half way checks
		// the keys it wrote too, or they would stand unmarked until that later run. D1 failing to
		// tell counts as such a change.
		if (!lag.marked && written.size > 0) {
			const overtaken = await writesOvertaken(env.DB, written, now).catch(() => true);
			if (overtaken) await mark();
		}
	}
}

/** What the steps of one reconcile run share: its KV budget, its mark, and the keys it wrote. */
interface RunState {
	budget: KvBudget;
	/** Marks KV as lagging, once a run. */
	mark: () => Promise<void>;
	written: EdgeWrites;
}

/** The steps of {@link reconcile}. */
async function reconcileSteps(
	env: Env,
	now: number,
	batchSize: number,
	policy: PolicySettings,
	{ budget, mark, written }: RunState,
): Promise<ReconcileResult> {
	const queued = await readSoftBounceRecheck(env.DB, batchSize);
	const rechecked = await recheckSoftBounces(env.DB, queued, policy, now);
	const retired = await retireExpired(env.DB, now, batchSize);
	const drained = await drainPending(env, now, batchSize, budget, written);
	// Keys still to write after this run: lookups keep reading D1 for what KV calls deliverable
	// until a run finds none (edge-lag.ts). A queue that only holds keys already right (its
	// requests wrote them) does not mark KV, or a busy deployment's lookups would all go to D1; but
	// while a mark lasts, a queue still to drain keeps it, since the keys a writer left may wait
	// behind such keys (the queue is drained oldest first), and the run reached none of them. The
	// drain's part is decided at once, so that a run failing later still keeps the mark.
	if (drained.failed > 0 || (drained.fixed > 0 && drained.more)) await mark();
	else if (drained.more) {
		budget.left -= 1; // the read of the mark, unless this isolate knows it
		if (await edgeLagging(env.SUPPRESSIONS, now)) await mark();
	}
	const state = parseState(await readCronState(env.DB, STATE));

	let addresses: string[] = [];
	if (state.d1 !== true) {
		addresses = await listAddresses(env.DB, state.d1, batchSize);
		state.d1 = addresses.length < batchSize ? true : (addresses[addresses.length - 1] ?? true);
	}
	// An address the drain has just checked is left out: KV may show a second read so soon the
	// value the drain replaced, and it refuses a second write to a key within a second.
	const drainedEmails = new Set(drained.emails);
	const toCheck = [...new Set([...rechecked, ...retired.emails, ...addresses])].filter(
		(email) => !drainedEmails.has(email),
	);
	const repaired = await repairKeys(env, toCheck, now, budget, written);
	// Addresses the budget left unchecked wait in the queue, due at once; those whose write failed
	// wait behind the others.
	const unchecked = toCheck.slice(repaired.checked);
	await queuePending(env.DB, unchecked);
	await queuePending(env.DB, repaired.failed, now);
	const deferred = [...repaired.failed, ...unchecked];
	let fixed = drained.fixed + repaired.fixed;
	if (deferred.length > 0) await mark();

	let listedCount = 0;
	// A listing costs one operation and each orphan it finds one more; two are kept for the mark.
	const listLimit = Math.min(batchSize, 1000, budget.left - 3);
	if (state.kv !== true && listLimit > 0) {
		const cursor = state.kv;
		const listed = await env.SUPPRESSIONS.list<{ email?: unknown }>({
			limit: listLimit,
			...(cursor ? { cursor } : {}),
		}).catch((error: unknown) => {
			// A saved cursor that KV no longer takes would fail every run here, before the state is
			// saved, and the sweep would never move again: it starts over at the first key instead.
			// Without a cursor the failure is KV's own, and the run fails as it would.
			if (!cursor) throw error;
			log("warn", "KV sweep cursor refused, starting the sweep over", { error: String(error) });
			return null;
		});
		budget.left -= 1;
		if (listed) {
			fixed += await deleteOrphans(env, listed.keys, now, written);
			listedCount = listed.keys.length;
			state.kv = listed.list_complete ? true : listed.cursor;
		} else state.kv = "";
	}

	// A cycle whose sweeps reached their end starts again at once, whatever the queues hold, so a
	// steady stream of expiries or imports never pauses the repair of stale keys.
	const swept = state.d1 === true && state.kv === true;
	const done =
		swept &&
		queued.length < batchSize &&
		retired.entries < batchSize &&
		drained.checked < batchSize &&
		!drained.more &&
		deferred.length === 0;
	const next = swept ? { d1: "", kv: "" } : state;
	await writeCronState(env.DB, STATE, JSON.stringify(next)).run();
	return {
		rechecked: queued.length,
		expired: retired.entries,
		checked: drained.checked + repaired.checked + listedCount,
		fixed,
		done,
	};
}

/**
 * Brings the KV copy of queued addresses (each whose entries changed, migration 0010, and what an
 * earlier run had no budget for) up to date, oldest first, at most `limit` of them and as many as
 * `budget` allows, and takes those off the queue; only those last changed
 * {@link KV_WRITE_SETTLE_SECONDS} or more before `now`. `more` tells that some may stay queued:
 * the budget stopped it before the queue or the limit ran out, a write failed, or it read `limit`.
 */
async function drainPending(
	env: Env,
	now: number,
	limit: number,
	budget: KvBudget,
	written: EdgeWrites,
): Promise<{ checked: number; fixed: number; failed: number; more: boolean; emails: string[] }> {
	const pending = await readPending(env.DB, limit, now - KV_WRITE_SETTLE_SECONDS);
	if (pending.length === 0) return { checked: 0, fixed: 0, failed: 0, more: false, emails: [] };
	const { checked, fixed, failed } = await repairKeys(
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
		more: checked < pending.length || failed.length > 0 || pending.length === limit,
		emails: pending.slice(0, checked).map((row) => row.email),
	};
}

/**
 * Puts or deletes the keys of `emails` whose KV value differs from what D1 says, in order, a bulk
 * read of up to 100 at a time, while `budget` covers a read and a write for each address of the
 * next batch. Returns how many addresses it checked (a prefix of `emails`) and fixed, and those
 * whose write failed (KV refuses a second write to a key within a second): logged, not thrown, so
 * that one refused key does not stop the rest. What it writes goes into `written` at once, which
 * it also returns: a caller that fails later still knows the keys it wrote.
 */
export async function repairKeys(
	env: Env,
	emails: string[],
	now: number,
	budget: KvBudget,
	written: EdgeWrites = new Map(),
): Promise<{ checked: number; fixed: number; failed: string[]; written: EdgeWrites }> {
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
	// One line for all of them: in a KV outage a run may fail hundreds of writes, and a Worker's
	// logs hold 128 KB per invocation, past which the run's own line would be lost.
	if (failed.length > 0)
		log("warn", "edge write failed", { failed: failed.length, error: firstError });
	return { checked, fixed, failed, written };
}

/**
 * Deletes listed KV keys whose address has no live entry in D1, adding them to `written`. An `h:`
 * key whose metadata does not name its address is left alone: it cannot be checked, and deleting a
 * live address's key would call it deliverable. Writers replace it whenever the address changes.
 */
async function deleteOrphans(
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
