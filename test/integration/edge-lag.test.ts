import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { EDGE_SYNC_AT_ONCE } from "../../src/suppressions/edge";
import { DRAINED_KEY, LAG_KEY, LAG_SECONDS } from "../../src/suppressions/edge-lag";
import {
	call,
	countingD1,
	countingKv,
	countRows,
	envWithFailingSql,
	lookup,
	parkSweeps,
	postCallback,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

const HEADER = "email,list,scope,reason,source,created_at,updated_at,expires_at";
const admin = { authorization: `Bearer ${tokens.admin}` };

/** Imports `count` new manual entries, `i0@example.com` on (another `prefix` than `i`). */
async function importNew(count: number, testEnv: Env = env, prefix = "i"): Promise<void> {
	const lines = Array.from(
		{ length: count },
		(_, i) => `${prefix}${i}@example.com,manual,*,,api,,,`,
	);
	const response = await call(
		"/v1/suppressions/import",
		{
			method: "POST",
			headers: { ...admin, "content-type": "text/csv" },
			body: [HEADER, ...lines].join("\n"),
		},
		testEnv,
	);
	expect(await response.json()).toEqual({ imported: count, unchanged: 0, failed: [] });
}

async function check(emails: string[], testEnv: Env = env) {
	const response = await call(
		"/v1/suppressions/check",
		{
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
			body: JSON.stringify({ emails }),
		},
		testEnv,
	);
	expect(response.status).toBe(200);
	return (await response.json()) as { suppressedCount: number; deliverableCount: number };
}

/** How many of the addresses have a KV key. */
async function keysIn(emails: string[]): Promise<number> {
	let found = 0;
	for (let i = 0; i < emails.length; i += 100) {
		const values = await env.SUPPRESSIONS.get(
			emails.slice(i, i + 100).map((email) => `s:${email}`),
			"text",
		);
		for (const value of values.values()) if (value !== null) found++;
	}
	return found;
}

/** An env whose KV refuses the puts of address keys (not the lag mark's), as in a 429 storm. */
function envRefusingKeyWrites(): Env {
	const kv = new Proxy(env.SUPPRESSIONS, {
		get(target, property) {
			if (property === "put") {
				return (key: string, ...rest: unknown[]) =>
					key.startsWith("s:")
						? Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"))
						: Reflect.apply(target.put, target, [key, ...rest]);
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, SUPPRESSIONS: kv };
}

/** Whether a KV read is the lookups' read of the mark (with the cron's key, in one bulk read). */
const readsMark = (key: unknown) => Array.isArray(key) && key.includes(LAG_KEY);

const emails = (count: number) => Array.from({ length: count }, (_, i) => `i${i}@example.com`);

describe("while KV lags behind D1, lookups and checks read D1 for what KV would call deliverable", () => {
	beforeEach(resetDatabase);
	afterEach(() => {
		vi.useRealTimers();
	});

	it("an import larger than one request writes to KV is suppressed at once, in the check and the lookup", async () => {
		await importNew(1000);
		// One request writes 400 keys; the cron writes the rest, 500 a run.
		expect(await keysIn(emails(1000))).toBe(EDGE_SYNC_AT_ONCE);
		expect(await check(emails(1000))).toMatchObject({ suppressedCount: 1000, deliverableCount: 0 });
		expect((await lookup("i999@example.com")).suppressed).toBe(true);
		// Another isolate, with no memo of its own, reads the mark from KV.
		const fresh = countingKv();
		expect((await lookup("i998@example.com", "", fresh.env)).suppressed).toBe(true);
		expect(await check(emails(1000), fresh.env)).toMatchObject({ suppressedCount: 1000 });
		// An address D1 has no entry for is still deliverable.
		expect(await check(["nobody@example.com"])).toMatchObject({ deliverableCount: 1 });
	});

	it("reads D1 in one query for all of a check's keyless addresses, and not at all once the mark lapses", async () => {
		await importNew(EDGE_SYNC_AT_ONCE + 1);
		const d1 = countingD1();
		expect(await check(emails(1000), d1.env)).toMatchObject({
			suppressedCount: EDGE_SYNC_AT_ONCE + 1,
		});
		expect(d1.counts).toMatchObject({ single: 1, batches: 0 });
		// Every key written; then, past the mark, a keyless address is "no entries" again.
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect(await countRows("edge_pending")).toBe(0);
		expect(await keysIn(emails(EDGE_SYNC_AT_ONCE + 1))).toBe(EDGE_SYNC_AT_ONCE + 1);
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(Date.now() + (LAG_SECONDS + 60) * 1000);
		const after = countingD1();
		expect(await check(emails(1000), after.env)).toMatchObject({
			suppressedCount: EDGE_SYNC_AT_ONCE + 1,
		});
		expect((await lookup("nobody@example.com", "", after.env)).suppressed).toBe(false);
		expect(after.counts).toMatchObject({ single: 0, batches: 0 });
	});

	it("the cron renews the mark while it still writes keys, and leaves it to lapse after", async () => {
		const before = Math.floor(Date.now() / 1000);
		await importNew(1000);
		const marked = Number(await env.SUPPRESSIONS.get(LAG_KEY));
		const start = Date.now();
		// Marked by the import, at its own time plus LAG_SECONDS (however long the import took).
		expect(marked).toBeGreaterThanOrEqual(before + LAG_SECONDS);
		expect(marked).toBeLessThanOrEqual(Math.floor(start / 1000) + LAG_SECONDS);
		// 500 queued addresses a run, oldest first: a run that writes keys and leaves some queued
		// renews the mark; the run after the last key is written does not.
		let at = start + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		let renewed = marked;
		for (let run = 0; (await keysIn(emails(1000))) < 1000; run++) {
			expect(run).toBeLessThan(5);
			await parkSweeps();
			await runCron(at);
			const mark = Number(await env.SUPPRESSIONS.get(LAG_KEY));
			expect(mark).toBe(Math.floor(at / 1000) + LAG_SECONDS);
			renewed = mark;
			at += 300_000;
		}
		await parkSweeps();
		await runCron(at);
		expect(await countRows("edge_pending")).toBe(0);
		expect(Number(await env.SUPPRESSIONS.get(LAG_KEY))).toBe(renewed);
	});

	it("the mark outlasts its time while the cron has not written the keys it was put for", async () => {
		await importNew(1000);
		// The cron stops (its trigger paused, or every run failing) for an hour: the 600 keys the
		// import left are still unwritten.
		vi.useFakeTimers({ toFake: ["Date"] });
		let at = Date.now() + 3600_000;
		vi.setSystemTime(at);
		const elsewhere = countingKv().env;
		expect((await lookup("i999@example.com", "", elsewhere)).suppressed).toBe(true);
		expect(await check(emails(1000), elsewhere)).toMatchObject({ suppressedCount: 1000 });
		// Once the cron is back and has written them, the mark lapses at its time.
		for (let run = 0; run < 3; run++) {
			await parkSweeps();
			await runCron(at);
			at += 300_000;
			vi.setSystemTime(at);
		}
		expect(await countRows("edge_pending")).toBe(0);
		expect(await keysIn(emails(1000))).toBe(1000);
		vi.setSystemTime(at + LAG_SECONDS * 1000);
		const after = countingD1();
		expect((await lookup("nobody@example.com", "", after.env)).suppressed).toBe(false);
		expect(after.counts.single).toBe(0);
	});

	it("the cron records a drain that ends a mark, once", async () => {
		await importNew(EDGE_SYNC_AT_ONCE + 1);
		const at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		await parkSweeps();
		await runCron(at);
		expect(await countRows("edge_pending")).toBe(0);
		const drainedTo = Math.floor(at / 1000) - KV_WRITE_SETTLE_SECONDS;
		expect(Number(await env.SUPPRESSIONS.get(DRAINED_KEY))).toBe(drainedTo);
		// No mark left to end: the next run reads both keys and puts nothing.
		await parkSweeps();
		const next = countingKv();
		await runCron(at + 300_000, next.env);
		expect(next.counts).toMatchObject({ get: 1, put: 0 });
		expect(Number(await env.SUPPRESSIONS.get(DRAINED_KEY))).toBe(drainedTo);
	});

	it("a run whose record of the drain fails still finishes, and the mark holds until one succeeds", async () => {
		await importNew(EDGE_SYNC_AT_ONCE + 1);
		// KV refuses the cron's own key (a 429, the Free plan's daily writes used up), nothing else.
		const kv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "put") {
					return (key: string, ...rest: unknown[]) =>
						key === DRAINED_KEY
							? Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"))
							: Reflect.apply(target.put, target, [key, ...rest]);
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		await parkSweeps();
		await runCron(at, { ...env, SUPPRESSIONS: kv });
		// The run wrote the key it had to and moved its sweeps on, as any run does.
		expect(await countRows("edge_pending")).toBe(0);
		expect(await keysIn(emails(EDGE_SYNC_AT_ONCE + 1))).toBe(EDGE_SYNC_AT_ONCE + 1);
		const state = await env.DB.prepare(
			"SELECT value FROM cron_state WHERE name = 'reconcile'",
		).first();
		expect(state?.value).toBe('{"d1":"","kv":""}');
		expect(await env.SUPPRESSIONS.get(DRAINED_KEY)).toBeNull();
		// Unrecorded, the drain does not end the mark: past its time lookups still read D1.
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(at + LAG_SECONDS * 1000);
		const during = countingD1();
		await lookup("nobody@example.com", "", { ...countingKv().env, DB: during.env.DB });
		expect(during.counts.single).toBe(1);
		// The next run records it, and the mark lapses.
		vi.useRealTimers();
		at += 300_000;
		await parkSweeps();
		await runCron(at);
		expect(Number(await env.SUPPRESSIONS.get(DRAINED_KEY))).toBe(
			Math.floor(at / 1000) - KV_WRITE_SETTLE_SECONDS,
		);
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(at + LAG_SECONDS * 1000);
		const after = countingD1();
		await lookup("nobody@example.com", "", { ...countingKv().env, DB: after.env.DB });
		expect(after.counts.single).toBe(0);
	});

	it("a cron run that comes after the mark lapsed, and writes keys with more left, marks KV again", async () => {
		await importNew(1000);
		// The cron stopped for longer than a mark lasts: the first run after it writes some keys
		// besides the 400 the import wrote, and leaves the others queued.
		const at = Date.now() + (LAG_SECONDS + 300) * 1000;
		await parkSweeps();
		await runCron(at);
		const keyless = [];
		for (const email of emails(1000))
			if ((await env.SUPPRESSIONS.get(`s:${email}`)) === null) keyless.push(email);
		expect(keyless.length).toBeGreaterThan(0);
		expect(await keysIn(emails(1000))).toBeGreaterThan(EDGE_SYNC_AT_ONCE);
		expect(Number(await env.SUPPRESSIONS.get(LAG_KEY))).toBe(Math.floor(at / 1000) + LAG_SECONDS);
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(at + 1000);
		// Another isolate, with no memo of its own, reads the mark from KV.
		expect((await lookup(keyless[0] as string, "", countingKv().env)).suppressed).toBe(true);
	});

	// 14 s on a throttled 2-core machine, near the default 20 s: a hang, not a slow machine, fails it.
	it("the mark lasts while an import's keys wait behind a queue of keys the requests already wrote", async () => {
		// 2,000 changes whose requests wrote their keys (400 each, so none marked KV) ...
		for (let i = 0; i < 5; i++) await importNew(EDGE_SYNC_AT_ONCE, env, `a${i}-`);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();
		// ... queued ahead of an import whose keys past the first 400 wait for the cron.
		await importNew(1000);
		const start = Date.now();
		// Four runs of 500 take the queue's first 2,000, all already right: meanwhile the mark
		// must not lapse, or 600 imported addresses read as deliverable.
		let at = start + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		for (let run = 0; run < 4; run++) {
			await parkSweeps();
			await runCron(at);
			at += 300_000;
		}
		expect(await keysIn(emails(1000))).toBe(EDGE_SYNC_AT_ONCE);
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(at - 1000);
		const elsewhere = countingKv().env;
		expect(await check(emails(1000), elsewhere)).toMatchObject({ suppressedCount: 1000 });
		expect((await lookup("i999@example.com", "", elsewhere)).suppressed).toBe(true);
		// Once the queue is drained the mark lapses.
		vi.useRealTimers();
		for (let run = 0; run < 3; run++) {
			await parkSweeps();
			await runCron(at);
			at += 300_000;
		}
		expect(await countRows("edge_pending")).toBe(0);
		expect(await keysIn(emails(1000))).toBe(1000);
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(at + LAG_SECONDS * 1000);
		const after = countingD1();
		expect((await lookup("nobody@example.com", "", after.env)).suppressed).toBe(false);
		expect(after.counts.single).toBe(0);
	}, 60_000);

	it("a check reads each address from D1 once, when KV fails as well as lags", async () => {
		await importNew(EDGE_SYNC_AT_ONCE + 1);
		// KV refuses every read, the mark's included: each batch of 100 goes to D1, and the mark
		// counts as set.
		const d1 = countingD1();
		const testEnv = { ...d1.env, SUPPRESSIONS: countingKv({ get: true }).env.SUPPRESSIONS };
		expect(await check(emails(1000), testEnv)).toMatchObject({
			suppressedCount: EDGE_SYNC_AT_ONCE + 1,
			deliverableCount: 1000 - EDGE_SYNC_AT_ONCE - 1,
		});
		expect(d1.counts).toMatchObject({ single: 10, batches: 0 });
	});

	it("a cron run that fails after its drain has still renewed the mark", async () => {
		await importNew(1000);
		const marked = Number(await env.SUPPRESSIONS.get(LAG_KEY));
		await parkSweeps();
		// The drain writes keys and leaves more; then D1 refuses the read of the sweeps' position.
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		await expect(runCron(later, envWithFailingSql("FROM cron_state"))).rejects.toThrow("injected");
		expect(await keysIn(emails(1000))).toBeGreaterThan(EDGE_SYNC_AT_ONCE);
		expect(Number(await env.SUPPRESSIONS.get(LAG_KEY))).toBe(
			Math.floor(later / 1000) + LAG_SECONDS,
		);
		expect(Number(await env.SUPPRESSIONS.get(LAG_KEY))).toBeGreaterThan(marked);
	});

	it("a queue of keys the requests already wrote does not mark KV, however long", async () => {
		await postCallback(
			["a", "b", "c"].map((name) => ({
				event: "spamreport",
				email: `${name}@example.com`,
				timestamp: 1,
			})),
		);
		expect(await keysIn(["a@example.com", "b@example.com", "c@example.com"])).toBe(3);
		await parkSweeps();
		// Two of three a run: more stay queued, but none needed a write.
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, {
			...env,
			RECONCILE_BATCH_SIZE: "2",
		});
		expect(await countRows("edge_pending")).toBe(1);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();
	});

	it("a callback whose KV write failed is suppressed at once, elsewhere too", async () => {
		const refusing = envRefusingKeyWrites();
		expect(
			(
				await postCallback(
					{ event: "bounce", bounceType: "hard_bounce", email: "hb@example.com", timestamp: 1 },
					{ env: refusing },
				)
			).status,
		).toBe(200);
		expect(await env.SUPPRESSIONS.get("s:hb@example.com")).toBeNull();
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		expect((await lookup("hb@example.com")).suppressed).toBe(true);
		expect((await lookup("hb@example.com", "", countingKv().env)).suppressed).toBe(true);
	});

	it("an import whose KV writes failed is suppressed at once, elsewhere too", async () => {
		await importNew(3, envRefusingKeyWrites());
		expect(await keysIn(emails(3))).toBe(0);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		expect((await lookup("i2@example.com", "", countingKv().env)).suppressed).toBe(true);
	});

	it("an address whose key predates a change is read from D1 when KV calls it deliverable", async () => {
		// Its key holds an unsubscribe from one sender ...
		await postCallback({
			event: "unsubscribe",
			email: "old@example.com",
			timestamp: 1,
			fromDomain: "a.example.com",
		});
		// ... and the hard bounce after it never reached KV.
		await postCallback(
			{ event: "bounce", bounceType: "hard_bounce", email: "old@example.com", timestamp: 2 },
			{ env: envRefusingKeyWrites() },
		);
		const key = JSON.parse((await env.SUPPRESSIONS.get("s:old@example.com")) as string);
		expect(key).toMatchObject([{ list: "unsubscribe" }]);
		const other = countingKv().env;
		expect((await lookup("old@example.com", "?fromDomain=b.example.com", other)).entries).toEqual([
			expect.objectContaining({ list: "bounce" }),
		]);
		const response = await call(
			"/v1/suppressions/check",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.lookup}` },
				body: JSON.stringify({ emails: ["old@example.com"], fromDomain: "b.example.com" }),
			},
			other,
		);
		expect(await response.json()).toMatchObject({
			results: [{ suppressed: true, lists: ["bounce"] }],
		});
	});

	it("an isolate whose mark KV refused too keeps it for the whole mark", async () => {
		// KV takes no write at all, the mark's included (an outage, the Free plan's daily writes).
		const failing = countingKv({ put: true });
		await postCallback(
			{ event: "bounce", bounceType: "hard_bounce", email: "lost@example.com", timestamp: 1 },
			{ env: failing.env },
		);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();
		expect((await lookup("lost@example.com", "", failing.env)).suppressed).toBe(true);
		// Past the 90 seconds an isolate trusts its own mark for, KV still shows none.
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(Date.now() + 5 * 60_000);
		expect((await lookup("lost@example.com", "", failing.env)).suppressed).toBe(true);
		// Other isolates never learnt of it: the documented lag (docs/storage.md).
		expect((await lookup("lost@example.com", "", countingKv().env)).suppressed).toBe(false);
		// And it ends with the mark.
		vi.setSystemTime(Date.now() + LAG_SECONDS * 1000);
		expect((await lookup("lost@example.com", "", failing.env)).suppressed).toBe(false);
	});

	it("a cron run whose KV writes fail marks KV", async () => {
		await postCallback({ event: "spamreport", email: "lost@example.com", timestamp: 1 });
		// The key goes missing (written by hand, say); only the sweep finds it.
		await env.SUPPRESSIONS.delete("s:lost@example.com");
		await env.DB.prepare("DELETE FROM edge_pending").run();
		await runCron(Date.now(), envRefusingKeyWrites());
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		expect((await lookup("lost@example.com", "", countingKv().env)).suppressed).toBe(true);
	});

	it("a writer whose time is older than another's never moves the mark earlier", async () => {
		await importNew(1000);
		const marked = Number(await env.SUPPRESSIONS.get(LAG_KEY));
		// A cron run scheduled a minute ago (its retention took that long, say) fails the writes
		// of its sweep and marks KV after the import did.
		await runCron(Date.now() - 60_000, envRefusingKeyWrites());
		expect(await countRows("edge_pending")).toBeGreaterThan(0);
		expect(Number(await env.SUPPRESSIONS.get(LAG_KEY))).toBeGreaterThanOrEqual(marked);
	});

	it("an unreadable mark counts as set; a readable one is read once per isolate for a while", async () => {
		await postCallback({ event: "spamreport", email: "s@example.com", timestamp: 1 });
		await env.SUPPRESSIONS.delete("s:s@example.com");
		// KV refuses the read of the mark alone.
		const kv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "get") {
					return (key: unknown, ...rest: unknown[]) =>
						readsMark(key)
							? Promise.reject(new Error("KV: injected failure"))
							: Reflect.apply(target.get, target, [key, ...rest]);
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		expect((await lookup("s@example.com", "", { ...env, SUPPRESSIONS: kv })).suppressed).toBe(true);
		await env.SUPPRESSIONS.put(LAG_KEY, "not a time");
		expect((await lookup("s@example.com", "", countingKv().env)).suppressed).toBe(true);
		// No mark: the key's absence is the answer, and the second lookup reads only the key.
		await env.SUPPRESSIONS.delete(LAG_KEY);
		const counting = countingKv();
		expect((await lookup("s@example.com", "", counting.env)).suppressed).toBe(false);
		expect(counting.counts.get).toBe(2);
		expect((await lookup("s@example.com", "", counting.env)).suppressed).toBe(false);
		expect(counting.counts.get).toBe(3);
	});

	it("a read of the mark that was under way while this isolate put it does not undo it", async () => {
		await postCallback({
			event: "unsubscribe",
			email: "u@example.com",
			timestamp: 1,
			fromDomain: "a.example.com",
		});
		// One isolate's binding: its reads of the mark may answer what KV held when they began, and
		// its writes of address keys fail while `refusing` is on.
		let meanwhile: (() => Promise<unknown>) | null = null;
		let refusing = false;
		const kv: KVNamespace = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "get") {
					return async (key: unknown, ...rest: unknown[]) => {
						const value = await Reflect.apply(target.get, target, [key, ...rest]);
						if (readsMark(key) && meanwhile) {
							const run = meanwhile;
							meanwhile = null;
							await run();
						}
						return value;
					};
				}
				if (property === "put") {
					return (key: string, ...rest: unknown[]) =>
						refusing && key.startsWith("s:")
							? Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"))
							: Reflect.apply(target.put, target, [key, ...rest]);
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const isolate = { ...env, SUPPRESSIONS: kv };
		// While a lookup reads the mark, a hard bounce of the address fails its key write and marks.
		meanwhile = async () => {
			refusing = true;
			await postCallback(
				{ event: "bounce", bounceType: "hard_bounce", email: "u@example.com", timestamp: 2 },
				{ env: isolate },
			);
			refusing = false;
		};
		const query = "?fromDomain=b.example.com";
		// Its key was read before the bounce: either answer is right for it.
		await lookup("u@example.com", query, isolate);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		// The key still holds the unsubscribe alone; the next lookup here must read D1.
		expect((await lookup("u@example.com", query, isolate)).suppressed).toBe(true);
	});

	it("a mark read again once its memo went stale is trusted for another while", async () => {
		await env.SUPPRESSIONS.put(LAG_KEY, String(Math.floor(Date.now() / 1000) + LAG_SECONDS));
		const counting = countingKv();
		// An address KV has no key for: each lookup reads its key, and the mark unless it knows it.
		expect((await lookup("nobody@example.com", "", counting.env)).suppressed).toBe(false);
		expect(counting.counts.get).toBe(2);
		vi.useFakeTimers({ toFake: ["Date"] });
		vi.setSystemTime(Date.now() + 60_000);
		expect((await lookup("nobody@example.com", "", counting.env)).suppressed).toBe(false);
		expect(counting.counts.get).toBe(4);
		expect((await lookup("nobody@example.com", "", counting.env)).suppressed).toBe(false);
		expect(counting.counts.get).toBe(5);
	});

	it("a read of the mark that began before it was put, ending during a read that found it, does not undo it", async () => {
		// An address D1 suppresses that KV has no key for.
		await postCallback({ event: "spamreport", email: "s@example.com", timestamp: 1 });
		await env.SUPPRESSIONS.delete("s:s@example.com");
		// One isolate's binding: the answer of its first read of the mark comes only once a second
		// read has its own, and the second answers once the first lookup has ended.
		let reads = 0;
		let firstRead = () => {};
		const firstReadDone = new Promise<void>((resolve) => {
			firstRead = resolve;
		});
		let release = () => {};
		const released = new Promise<void>((resolve) => {
			release = resolve;
		});
		let first: Promise<unknown> = Promise.resolve();
		const kv: KVNamespace = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "get") {
					return async (key: unknown, ...rest: unknown[]) => {
						const value = await Reflect.apply(target.get, target, [key, ...rest]);
						if (readsMark(key) && ++reads === 1) {
							firstRead();
							await released;
						} else if (readsMark(key) && reads === 2) {
							release();
							await first;
						}
						return value;
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const isolate = { ...env, SUPPRESSIONS: kv };
		first = lookup("s@example.com", "", isolate);
		await firstReadDone;
		// Another isolate marks KV between the two reads.
		const until = Math.floor(Date.now() / 1000) + LAG_SECONDS;
		await env.SUPPRESSIONS.put(LAG_KEY, String(until), { expiration: until });
		expect((await lookup("s@example.com", "", isolate)).suppressed).toBe(true);
		expect(reads).toBe(2);
		// The first read found no mark: either answer is right for it.
		await first;
	});

	it("a run puts the mark once, however many of its steps leave keys to a later run", async () => {
		await postCallback({ event: "spamreport", email: "lost@example.com", timestamp: 1 });
		await env.SUPPRESSIONS.delete("s:lost@example.com");
		// Its write fails in the drain, then in the sweep of D1 (a new cycle): both leave it queued.
		const refusing = envRefusingKeyWrites();
		let marks = 0;
		const kv = new Proxy(refusing.SUPPRESSIONS, {
			get(target, property) {
				const value = Reflect.get(target, property);
				if (property !== "put") return typeof value === "function" ? value.bind(target) : value;
				return (key: string, ...rest: unknown[]) => {
					if (key === LAG_KEY) marks++;
					return Reflect.apply(value, target, [key, ...rest]);
				};
			},
		});
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, {
			...refusing,
			SUPPRESSIONS: kv,
		});
		expect(await countRows("edge_pending")).toBe(1);
		expect(marks).toBe(1);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
	});
});
