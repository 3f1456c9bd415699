/**
 * Whether KV may lag behind D1's entries, beyond the minute KV itself takes.
 *
 * A request writes the keys of at most EDGE_SYNC_AT_ONCE addresses; the reconcile cron writes the
 * rest, a batch every 5 minutes, and those whose write failed. Until then a missing key reads as
 * "no entries", and an address imported a moment ago would be deliverable for an hour after an
 * import of 10,000. So whatever leaves keys unwritten marks KV as lagging, for at least
 * {@link LAG_SECONDS}, and while the mark lasts lookups and checks read D1 for the addresses KV
 * would call deliverable (no key, or a key older than a change). The cron renews it while it
 * still finds keys to write, and while its queue, drained oldest first, still holds addresses
 * that may be the ones left; it then lapses, but not before the cron has checked every address
 * queued by the time it was put ({@link DRAINED_KEY}): a cron that stops running (its trigger
 * paused, its runs failing) would otherwise leave those keys unwritten, and the addresses
 * deliverable, from 15 minutes after the mark on.
 *
 * One key holds the mark: its value is the Unix second until which it lasts at least, put
 * {@link LAG_SECONDS} after the writer's time, which is therefore when it was put. Writers read
 * it first and only ever push it later, so two of them (or a writer and a mark put by hand) never
 * undo each other, and nobody deletes it. A second key, written by the cron alone, holds the
 * second up to which it has checked every queued address. Readers read both in one operation and
 * keep what they read for {@link MEMO_SECONDS} per isolate: a lookup costs one KV read, not two
 * (KV bills each key read).
 */

/** The mark's key: neither an address's (`s:`) nor a hashed one's (`h:`), so sweeps leave it. */
export const LAG_KEY = "edge:lagging";

/**
 * The cron's key: the Unix second up to which it has checked the KV key of every address queued
 * in `edge_pending`. A mark whose time has passed lapses once this reaches the time it was put.
 */
export const DRAINED_KEY = "edge:drained";

/**
 * How long a mark lasts: past the next cron run (every 5 minutes) that finds the addresses the
 * writer left, which waits 2 minutes for writes to land (KV_WRITE_SETTLE_SECONDS), with room for
 * a run that comes late.
 */
export const LAG_SECONDS = 15 * 60;

/** How long an isolate trusts what it read of the mark, in seconds. */
const MEMO_SECONDS = 30;
/** How long an isolate trusts its own mark: KV may take a minute to show it even here. */
const OWN_MARK_SECONDS = 90;

interface Memo {
	/** Wall-clock milliseconds until which the memo is trusted. */
	freshUntil: number;
	/** Unix seconds until which KV lags at least; 0 when unmarked. */
	until: number;
	/** Unix seconds up to which the cron has checked every queued address. */
	drained: number;
}

/**
 * Whether the mark still holds at `now`: until its time, and past it until the cron has checked
 * every address queued by the time it was put.
 */
function lagsAt(memo: Memo, now: number): boolean {
	return memo.until > now || memo.until - LAG_SECONDS > memo.drained;
}

// Keyed by the binding, which is the same object for every request of an isolate.
const memos = new WeakMap<KVNamespace, Memo>();

/**
 * Marks KV as lagging until {@link LAG_SECONDS} after `now`, or after the put if that is later,
 * unless the stored mark lasts longer already (it reads the mark first: two KV operations). Throws
 * what KV's put throws; the caller logs it (the keys it left are queued in D1 either way, and
 * the cron writes them).
 */
export async function markEdgeLagging(kv: KVNamespace, now: number): Promise<void> {
	// From the put, not from `now`: a cron run's `now` is its scheduled time, and a request's is
	// when it came in, both a while before the put. A mark put later then never ends sooner than
	// one put before it, which it replaces.
	const until = Math.max(now, Math.floor(Date.now() / 1000)) + LAG_SECONDS;
	const memo = memos.get(kv);
	const own = {
		freshUntil: Date.now() + OWN_MARK_SECONDS * 1000,
		until: Math.max(until, memo?.until ?? 0),
		drained: memo?.drained ?? 0,
	};
	// This isolate sees its own mark at once; others within about a minute, as KV propagates it.
	memos.set(kv, own);
	try {
		// A mark that lasts longer stays as it is: one put by hand after a restore of D1 must last
		// until the sweeps have checked every address (docs/deploy.md), not 15 minutes after the
		// next writer's. A mark that cannot be read is replaced, as before.
		const stored = await readMark(kv);
		if (stored !== null && stored >= until) {
			own.until = Math.max(own.until, stored);
			return;
		}
		// No expiration: past its time the mark still holds until the cron has written the keys.
		await kv.put(LAG_KEY, String(until));
	} catch (error) {
		// KV will not show the mark (an outage, the Free plan's daily writes used up), so this
		// isolate keeps what it knows for the whole mark rather than read KV again after 90 s.
		own.freshUntil = own.until * 1000;
		throw error;
	}
}

/** The second until which the stored mark lasts, or null when there is none or it cannot be read. */
async function readMark(kv: KVNamespace): Promise<number | null> {
	const text = await kv.get(LAG_KEY, "text").catch(() => null);
	const until = text === null ? Number.NaN : Number(text);
	return Number.isSafeInteger(until) ? until : null;
}

/**
 * Whether KV lags at `now`: then an address KV calls deliverable must be read from D1. A mark that
 * cannot be read counts as set.
 */
export async function edgeLagging(kv: KVNamespace, now: number): Promise<boolean> {
	let memo = memos.get(kv);
	if (!memo || Date.now() > memo.freshUntil) {
		let stored: { until: number; drained: number };
		try {
			stored = await readLagKeys(kv);
		} catch {
			return true;
		}
		// A value this code did not write reads as a mark, for as long as a mark lasts.
		if (Number.isNaN(stored.until)) stored.until = now + LAG_SECONDS;
		// A mark this isolate put while the read was under way is newer than what the read found
		// (KV may even take a minute to show it here): it stands, unless KV showed a later one.
		const meanwhile = memos.get(kv);
		memo =
			meanwhile && meanwhile !== memo && meanwhile.until >= stored.until
				? { ...meanwhile, drained: Math.max(meanwhile.drained, stored.drained) }
				: { freshUntil: Date.now() + MEMO_SECONDS * 1000, ...stored };
		memos.set(kv, memo);
	}
	return lagsAt(memo, now);
}

/**
 * Both keys, in one read: the mark's second (0 without one, NaN for a value this code did not
 * write) and the cron's (0 without one).
 */
async function readLagKeys(kv: KVNamespace): Promise<{ until: number; drained: number }> {
	const values = await kv.get([LAG_KEY, DRAINED_KEY], "text");
	const mark = values.get(LAG_KEY) ?? null;
	const until = mark === null ? 0 : Number(mark);
	const drained = Number(values.get(DRAINED_KEY) ?? 0);
	return {
		until: Number.isSafeInteger(until) ? until : Number.NaN,
		drained: Number.isSafeInteger(drained) ? drained : 0,
	};
}

/**
 * Records that the cron has checked the key of every address queued in `edge_pending` at or
 * before `drainedTo`, when that ends a mark whose time has passed or will: one read, and a put
 * only then (so about one per mark). Cron runs that overlap may put their seconds out of order,
 * which only makes the mark last longer.
 */
export async function recordEdgeDrained(kv: KVNamespace, drainedTo: number): Promise<void> {
	const stored = await readLagKeys(kv);
	const putAt = stored.until - LAG_SECONDS;
	// A mark this code did not write lasts by its time alone (NaN fails the comparisons).
	if (!(putAt > stored.drained && drainedTo >= putAt)) return;
	await kv.put(DRAINED_KEY, String(drainedTo));
	const memo = memos.get(kv);
	if (memo) memo.drained = Math.max(memo.drained, drainedTo);
}

/**
 * Drops this isolate's memo of the mark, so that the next reader reads KV: for when the mark was
 * deleted by hand (`wrangler kv key delete edge:lagging`, or a test that empties KV).
 */
export function forgetEdgeLag(kv: KVNamespace): void {
	memos.delete(kv);
}
