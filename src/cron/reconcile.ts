import type { PolicySettings } from "../config";
import { log } from "../log";
import { type EdgeWrites, markLagging, writesOvertaken } from "../suppressions/edge";
import { edgeLagging, recordEdgeDrained } from "../suppressions/edge-lag";
import {
	listAddresses,
	readCronState,
	retireExpired,
	writeCronState,
} from "../suppressions/expiry-store";
import { readSoftBounceRecheck, recheckSoftBounces } from "../suppressions/soft-bounce-store";
import { queuePending } from "../suppressions/transfer-store";
import {
	deleteOrphans,
	drainPending,
	KV_WRITE_SETTLE_SECONDS,
	type KvBudget,
	repairKeys,
} from "./edge-repair";

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

/** What the lag mark costs a run: a read of the stored mark, then the put (edge-lag.ts). */
const MARK_OPERATIONS = 2;

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
	// The mark's two operations (the read of the stored mark, and the put) are kept from the start:
	// a step that spent the rest, such as a drain of keys all to write, may still have to mark.
	const budget: KvBudget = { left: KV_OPERATIONS_PER_RUN - MARK_OPERATIONS };
	const lag = { marked: false };
	// One put a run at most, as KV takes one write per key per second.
	const mark = async () => {
		if (lag.marked) return;
		lag.marked = true;
		await markLagging(env, now);
	};
	const written: EdgeWrites = new Map();
	const writeFailures = { failed: 0, error: "" };
	try {
		return await reconcileSteps(env, now, batchSize, policy, {
			budget,
			mark,
			written,
			writeFailures,
		});
	} finally {
		// One line for the run's failed writes, the drain's and the sweep's, also when it fails
		// later: an alert that sums `failed` counts each write once.
		if (writeFailures.failed > 0) log("warn", "edge write failed", writeFailures);
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
	/** The key writes that failed, and the first error, for the run's one log line. */
	writeFailures: { failed: number; error: string };
}

/** The steps of {@link reconcile}. */
async function reconcileSteps(
	env: Env,
	now: number,
	batchSize: number,
	policy: PolicySettings,
	{ budget, mark, written, writeFailures }: RunState,
): Promise<ReconcileResult> {
	const queued = await readSoftBounceRecheck(env.DB, batchSize);
	const rechecked = await recheckSoftBounces(env.DB, queued, policy, now);
	const retired = await retireExpired(env.DB, now, batchSize);
	const drained = await drainPending(env, now, batchSize, budget, written);
	writeFailures.failed += drained.failed;
	writeFailures.error ||= drained.error;
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
	// Every address due when the drain read the queue is checked, none failed.
	const drainedAll = !drained.more && drained.failed === 0;
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
	writeFailures.failed += repaired.failed.length;
	writeFailures.error ||= repaired.error;
	// Addresses the budget left unchecked wait in the queue, due at once; those whose write failed
	// wait behind the others.
	const unchecked = toCheck.slice(repaired.checked);
	await queuePending(env.DB, unchecked);
	await queuePending(env.DB, repaired.failed, now);
	const deferred = [...repaired.failed, ...unchecked];
	let fixed = drained.fixed + repaired.fixed;
	if (deferred.length > 0) await mark();

	let listedCount = 0;
	// A listing costs one operation and each orphan it finds one more.
	const listLimit = Math.min(batchSize, 1000, budget.left - 1);
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
			const deleted = await deleteOrphans(env, listed.keys, now, written);
			budget.left -= deleted;
			fixed += deleted;
			listedCount = listed.keys.length;
			state.kv = listed.list_complete ? true : listed.cursor;
		} else state.kv = "";
	}

	// A mark put before the drain's cutoff may now lapse at its time (edge-lag.ts): recorded with
	// what budget the run has left, else by a later run. Unrecorded, the mark only lasts longer, so
	// a KV failure here does not fail the run or keep its sweeps from moving on.
	if (drainedAll && budget.left >= 2) {
		try {
			await recordEdgeDrained(env.SUPPRESSIONS, now - KV_WRITE_SETTLE_SECONDS);
		} catch (error) {
			log("warn", "edge drain not recorded, the lag mark lasts until a run records it", {
				error: String(error),
			});
		}
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
