import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { KV_OPERATIONS_PER_RUN } from "../../src/cron/reconcile";
import { LAG_KEY } from "../../src/suppressions/edge-lag";
import {
	call,
	countingKv,
	countRows,
	daysAgo,
	envWithFailingSql,
	lookup,
	parkSweeps,
	postCallback,
	putSuppression,
	type ReconcileLine,
	resetDatabase,
	runCron,
	runCronReconciled,
	tokens,
} from "../helpers";

const cron = runCronReconciled;

async function history(email: string) {
	const { results } = await env.DB.prepare(
		"SELECT action, source FROM suppression_history WHERE email = ? ORDER BY seq",
	)
		.bind(email)
		.all();
	return results;
}

beforeEach(resetDatabase);
afterEach(() => vi.restoreAllMocks());

describe("entries that expire after 2038-01-19 (KV's latest expiration)", () => {
	it("an operator's entry is written to KV without an expiration, and the cron keeps it", async () => {
		await putSuppression("held@example.com", { expiresAt: "2041-06-01T00:00:00Z" });
		expect((await lookup("held@example.com")).suppressed).toBe(true);
		const { keys } = await env.SUPPRESSIONS.list({ prefix: "s:held@" });
		expect(keys[0]?.expiration).toBeUndefined();
		await cron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect((await lookup("held@example.com")).suppressed).toBe(true);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("a hard bounce under a long HARD_BOUNCE_SUPPRESS_DAYS suppresses at the edge", async () => {
		await postCallback(
			{
				event: "bounce",
				bounceType: "hard_bounce",
				email: "gone@example.com",
				timestamp: Math.floor(Date.now() / 1000) - 60,
			},
			{ env: { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "5000" } as Env },
		);
		expect((await lookup("gone@example.com")).suppressed).toBe(true);
	});

	it("an entry that expires soon still gets its key", async () => {
		await putSuppression("soon@example.com", {
			expiresAt: Math.floor(Date.now() / 1000) + 5,
		});
		const { keys } = await env.SUPPRESSIONS.list({ prefix: "s:soon@" });
		// A minute more than KV's 60 seconds, for a write whose `now` is some seconds old.
		expect(keys[0]?.expiration).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + 110);
	});
});

describe("KV's minute between a write and the key's expiration", () => {
	it("a run that writes a key 90 seconds after its scheduled time still writes it", async () => {
		// A run's `now` is its scheduled time, and its writes may come much later (a late trigger,
		// a retention catching up, hundreds of KV writes one after another). KV refuses an
		// expiration less than 60 seconds ahead of its own clock, so one worked out from the
		// scheduled time alone was refused for an entry that expires within the next minute.
		const wall = Math.floor(Date.now() / 1000);
		await putSuppression("brief@example.com", { expiresAt: wall + 30 });
		await env.SUPPRESSIONS.delete("s:brief@example.com");
		const result = await cron((wall - 90) * 1000);
		expect(result.fixed).toBe(1);
		const { keys } = await env.SUPPRESSIONS.list({ prefix: "s:brief@" });
		expect(keys[0]?.expiration).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + 60);
		expect((await lookup("brief@example.com")).suppressed).toBe(true);
	});
});

describe("the reconcile cron", () => {
	it("retires expired entries, recording them as expired by the cron", async () => {
		const soon = new Date(Date.now() + 120_000).toISOString();
		await putSuppression("e@example.com", { reason: "for two minutes", expiresAt: soon });
		expect(await env.SUPPRESSIONS.get("s:e@example.com")).not.toBeNull();
		const result = await cron(Date.now() + 3_600_000);
		expect(result).toMatchObject({ expired: 1, done: true });
		expect(await history("e@example.com")).toEqual([
			{ action: "added", source: "api" },
			{ action: "expired", source: "cron" },
		]);
		// Dated when it ran out, not when the cron came by.
		const line = await env.DB.prepare(
			"SELECT at FROM suppression_history WHERE action = 'expired'",
		).first<{ at: number }>();
		expect(line?.at).toBe(Math.ceil(Date.parse(soon) / 1000));
		expect(await env.SUPPRESSIONS.get("s:e@example.com")).toBeNull();
		const rows = await env.DB.prepare("SELECT count(*) AS n FROM suppressions").first<{
			n: number;
		}>();
		expect(rows?.n).toBe(0);
	});

	it("retires an entry at the very second it expires", async () => {
		const at = Math.floor(Date.now() / 1000) + 120;
		await putSuppression("edge@example.com", { expiresAt: at });
		expect(await cron(at * 1000)).toMatchObject({ expired: 1 });
		expect(await countRows("suppressions")).toBe(0);
	});

	it("retires at most RECONCILE_BATCH_SIZE entries a run, and the next run the rest", async () => {
		const at = Math.floor(Date.now() / 1000) + 120;
		for (const name of ["r1", "r2", "r3"]) {
			await putSuppression(`${name}@example.com`, { expiresAt: at });
		}
		const small = { ...env, RECONCILE_BATCH_SIZE: "2" };
		expect(await cron((at + 60) * 1000, small)).toMatchObject({ expired: 2, done: false });
		expect(await countRows("suppressions")).toBe(1);
		expect(await cron((at + 120) * 1000, small)).toMatchObject({ expired: 1 });
		expect(await countRows("suppressions")).toBe(0);
	});

	it("counts entries, not addresses, against RECONCILE_BATCH_SIZE: not done while expired entries remain", async () => {
		const at = Math.floor(Date.now() / 1000) + 120;
		// Ties are retired in address order: a-two's two entries take the whole batch of 2, and
		// b-one's waits for the next run.
		await putSuppression("a-two@example.com", { list: "manual", expiresAt: at });
		await putSuppression("a-two@example.com", { list: "unsubscribe", expiresAt: at });
		await putSuppression("b-one@example.com", { expiresAt: at });
		await parkSweeps();
		await env.DB.prepare("DELETE FROM edge_pending").run();
		const small = { ...env, RECONCILE_BATCH_SIZE: "2" };
		expect(await cron((at + 60) * 1000, small)).toMatchObject({ expired: 2, done: false });
		expect(await countRows("suppressions")).toBe(1);
		expect(await cron((at + 360) * 1000, small)).toMatchObject({ expired: 1 });
		expect(await countRows("suppressions")).toBe(0);
	});

	it("deletes a withdrawn soft-bounce entry without a second history line", async () => {
		const t = daysAgo(2);
		const soft = (at: number) => ({
			event: "bounce",
			bounceType: "soft_bounce",
			email: "w@example.com",
			timestamp: at,
		});
		await postCallback([soft(t), soft(t + 1), soft(t + 2)]);
		await postCallback({ event: "delivered", email: "w@example.com", timestamp: t + 1 });
		await cron(Date.now() + 1000);
		expect(await history("w@example.com")).toEqual([
			{ action: "added", source: "event" },
			{ action: "removed", source: "event" },
		]);
	});

	it("puts missing and stale keys and deletes orphans, leaving foreign keys alone", async () => {
		await postCallback([
			{ event: "spamreport", email: "a@example.com", timestamp: 1 },
			{ event: "spamreport", email: "b@example.com", timestamp: 1 },
		]);
		await env.SUPPRESSIONS.delete("s:a@example.com");
		await env.SUPPRESSIONS.put("s:b@example.com", "[]");
		await env.SUPPRESSIONS.put("s:orphan@example.com", '[{"list":"bounce"}]');
		await env.SUPPRESSIONS.put("someone-else", "keep me");
		const result = await cron();
		expect(result).toMatchObject({ expired: 0, fixed: 3, done: true });
		expect((await lookup("a@example.com")).suppressed).toBe(true);
		expect((await lookup("b@example.com")).entries).toHaveLength(1);
		expect(await env.SUPPRESSIONS.get("s:orphan@example.com")).toBeNull();
		expect(await env.SUPPRESSIONS.get("someone-else")).toBe("keep me");
		expect(await cron()).toMatchObject({ fixed: 0, done: true });
	});

	it("counts each address it checks and each KV key it lists", async () => {
		await putSuppression("kept@example.com", { reason: "kept" });
		await env.SUPPRESSIONS.put("s:orphan1@example.com", '[{"list":"bounce"}]');
		await env.SUPPRESSIONS.put("s:orphan2@example.com", '[{"list":"bounce"}]');
		// The queued address (the D1 sweep leaves it, just checked) and the three listed keys.
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		expect(await cron(later)).toMatchObject({ checked: 4, fixed: 2, done: true });
	});

	it("does not read or write again in its D1 sweep a key its drain has just checked", async () => {
		await putSuppression("twice@example.com", { reason: "once" });
		// Stale, so the drain writes it; KV may show a read so soon the value it replaced, and a
		// second write of the key within a second is refused.
		await env.SUPPRESSIONS.put("s:twice@example.com", "[]");
		const reads: string[][] = [];
		const puts: string[] = [];
		const kv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				const value = Reflect.get(target, property);
				if (property === "get")
					return (keys: string | string[], ...rest: unknown[]) => {
						reads.push(Array.isArray(keys) ? keys : [keys]);
						return Reflect.apply(value, target, [keys, ...rest]);
					};
				if (property === "put")
					return (key: string, ...rest: unknown[]) => {
						puts.push(key);
						return Reflect.apply(value, target, [key, ...rest]);
					};
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		await cron(later, { ...env, SUPPRESSIONS: kv });
		expect(reads.filter((keys) => keys.includes("s:twice@example.com"))).toHaveLength(1);
		expect(puts).toEqual(["s:twice@example.com"]);
		expect((await lookup("twice@example.com")).entries).toEqual([
			expect.objectContaining({ reason: "once" }),
		]);
	});

	it("an address whose entries and key are both gone needs no fix", async () => {
		await putSuppression("gone@example.com", { reason: "briefly" });
		const removed = await call("/v1/suppressions/gone%40example.com", {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(removed.status).toBe(200);
		expect(await env.SUPPRESSIONS.get("s:gone@example.com")).toBeNull();
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		expect(await cron(later)).toMatchObject({ fixed: 0, done: true });
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("takes a queued address off the queue once its change is exactly KV_WRITE_SETTLE_SECONDS old", async () => {
		await putSuppression("settle@example.com", { reason: "x" });
		const row = await env.DB.prepare("SELECT queued_at AS at FROM edge_pending").first<{
			at: number;
		}>();
		const settled = ((row?.at ?? 0) + KV_WRITE_SETTLE_SECONDS) * 1000;
		await cron(settled - 1000);
		expect(await countRows("edge_pending")).toBe(1);
		await cron(settled);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("works in bounded batches and finishes over several runs", async () => {
		const emails = Array.from({ length: 7 }, (_, i) => `n${i}@example.com`);
		await postCallback(emails.map((email) => ({ event: "spamreport", email, timestamp: 1 })));
		for (const email of emails) await env.SUPPRESSIONS.delete(`s:${email}`);
		const small = { ...env, RECONCILE_BATCH_SIZE: "3" };
		const runs: ReconcileLine[] = [];
		for (let i = 0; i < 5 && !runs.at(-1)?.done; i++) runs.push(await cron(Date.now(), small));
		expect(runs.map((run) => run.done)).toEqual([false, false, true]);
		expect(runs.reduce((sum, run) => sum + run.fixed, 0)).toBe(7);
		for (const email of emails) expect((await lookup(email)).suppressed).toBe(true);
	});

	it("keeps each run within its KV operations; later runs finish the work", async () => {
		const emails = Array.from({ length: 1200 }, (_, i) => `k${i}@example.com`);
		for (let i = 0; i < emails.length; i += 100) {
			await postCallback(
				emails.slice(i, i + 100).map((email) => ({ event: "spamreport", email, timestamp: 1 })),
			);
		}
		for (const email of emails) await env.SUPPRESSIONS.delete(`s:${email}`);
		const operations: number[] = [];
		const runs: ReconcileLine[] = [];
		for (let i = 0; i < 5 && !runs.at(-1)?.done; i++) {
			const counting = countingKv();
			// Five minutes apart, as the cron runs.
			const at = Date.now() + (i + 1) * 300_000;
			runs.push(await cron(at, { ...counting.env, RECONCILE_BATCH_SIZE: "5000" }));
			const { get, put, delete: deleted, list } = counting.counts;
			operations.push(get + put + deleted + list);
		}
		expect(runs[0]?.done).toBe(false);
		expect(runs.at(-1)?.done).toBe(true);
		for (const count of operations) expect(count).toBeLessThanOrEqual(KV_OPERATIONS_PER_RUN);
		expect(runs.reduce((sum, run) => sum + run.fixed, 0)).toBe(1200);
		const missing = [];
		for (const email of emails)
			if ((await env.SUPPRESSIONS.get(`s:${email}`)) === null) missing.push(email);
		expect(missing).toEqual([]);
	});

	it("counts the mark it put before its sweeps against its KV budget", async () => {
		await putSuppression("x@example.com", {});
		// 889 entries whose keys were never written, which only the sweep of D1 finds.
		await env.DB.prepare(
			`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 888)
			INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at)
			SELECT printf('q%03d@example.com', i), 'complaint', '*', 'event', 1, 1, 1 FROM n`,
		).run();
		await env.DB.prepare("DELETE FROM edge_pending WHERE email <> 'x@example.com'").run();
		await env.SUPPRESSIONS.delete("s:x@example.com");
		// KV refuses x's key: the drain's write fails (2 operations) and marks KV (1). The sweep's
		// 889 addresses (x, which the drain has just checked, is left out) then need 8 batches of
		// 101 operations and one of 90, one more than is left.
		let operations = 0;
		const kv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				const value = Reflect.get(target, property);
				if (typeof value !== "function") return value;
				return (...args: unknown[]) => {
					if (["get", "put", "delete", "list"].includes(String(property))) operations++;
					if (property === "put" && args[0] === "s:x@example.com") {
						return Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"));
					}
					return Reflect.apply(value, target, args);
				};
			},
		});
		const run = await cron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, {
			...env,
			SUPPRESSIONS: kv,
			RECONCILE_BATCH_SIZE: "5000",
		});
		expect(operations).toBeLessThanOrEqual(KV_OPERATIONS_PER_RUN);
		expect(run).toMatchObject({ fixed: 800, done: false });
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
	});

	it("a run whose sweep of D1 leaves two KV operations lists no keys: KV takes no list of 0", async () => {
		// 889 entries whose keys were never written, which only the sweep of D1 finds: 8 batches of
		// 101 operations and one of 90 leave the 2 kept for the mark, and none for the listing.
		await env.DB.prepare(
			`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 888)
			INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at)
			SELECT printf('q%03d@example.com', i), 'complaint', '*', 'event', 1, 1, 1 FROM n`,
		).run();
		const counting = countingKv();
		const run = await cron(Date.now(), { ...counting.env, RECONCILE_BATCH_SIZE: "5000" });
		expect(run).toMatchObject({ fixed: 889, done: false });
		expect(counting.counts).toMatchObject({ get: 9, put: 889, list: 0 });
		// The next run lists the keys, finding none to delete.
		expect(await cron(Date.now(), { ...env, RECONCILE_BATCH_SIZE: "5000" })).toMatchObject({
			fixed: 0,
			done: true,
		});
	});

	it.each([
		["the queue", true],
		["the sweep of D1", false],
	])(
		"a run whose KV budget runs out in %s queues the rest, is not done, and stays within budget",
		async (_, queued) => {
			// 892 entries whose keys were never written, all queued: 8 bulk reads of 100 and their 800
			// writes leave 92 operations, one short of what the last 92 addresses need.
			await env.DB.prepare(
				`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 891)
			INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at)
			SELECT printf('q%03d@example.com', i), 'complaint', '*', 'event', 1, 1, 1 FROM n`,
			).run();
			expect(await countRows("edge_pending")).toBe(892);
			// Reached through the queue, or (queue empty, a new cycle) through the D1 sweep.
			if (queued) await parkSweeps();
			else await env.DB.prepare("DELETE FROM edge_pending").run();
			const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
			const counting = countingKv();
			const first = await cron(later, { ...counting.env, RECONCILE_BATCH_SIZE: "5000" });
			const { get, put, delete: deleted, list } = counting.counts;
			expect(get + put + deleted + list).toBeLessThanOrEqual(KV_OPERATIONS_PER_RUN);
			expect(first).toMatchObject({ fixed: 800, done: false });
			expect(await countRows("edge_pending")).toBe(92);
			const second = await cron(later + 300_000, { ...env, RECONCILE_BATCH_SIZE: "5000" });
			expect(second.fixed).toBe(92);
			expect(await countRows("edge_pending")).toBe(0);
			expect((await lookup("q891@example.com")).suppressed).toBe(true);
		},
	);

	it("a drain that spends the whole budget on writes and must mark stays within its KV operations", async () => {
		// 891 queued entries whose keys were never written, as many as the run's batch: 8 bulk reads
		// of 100 and their writes, then one of 91, take 900 operations; a full queue may hold more,
		// so the run marks KV as lagging, a read of the stored mark and a put.
		await env.DB.prepare(
			`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 890)
			INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at)
			SELECT printf('q%03d@example.com', i), 'complaint', '*', 'event', 1, 1, 1 FROM n`,
		).run();
		await parkSweeps();
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		const counting = countingKv();
		const first = await cron(later, { ...counting.env, RECONCILE_BATCH_SIZE: "891" });
		const { get, put, delete: deleted, list } = counting.counts;
		expect(get + put + deleted + list).toBeLessThanOrEqual(KV_OPERATIONS_PER_RUN);
		expect(first).toMatchObject({ done: false });
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		// The next run writes what the budget left.
		await cron(later + 300_000, { ...env, RECONCILE_BATCH_SIZE: "891" });
		expect(await countRows("edge_pending")).toBe(0);
		expect((await lookup("q890@example.com")).suppressed).toBe(true);
	});

	it("checks every changed address at its next run, wherever its sweep is", async () => {
		// Many addresses with entries, so that the sweep (2 a run) is far from the changed ones.
		const others = Array.from(
			{ length: 30 },
			(_, i) => `a${String(i).padStart(2, "0")}@example.com`,
		);
		await postCallback(others.map((email) => ({ event: "spamreport", email, timestamp: 1 })));
		const small = { ...env, RECONCILE_BATCH_SIZE: "2" };
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		let runs = 0;
		while (!(await cron(later, small)).done) expect(++runs).toBeLessThan(40);
		// A KV put that fails (KV takes one write per key per second, or is down) ...
		const failing = countingKv({ put: true });
		await postCallback(
			{ event: "bounce", bounceType: "hard_bounce", email: "z-failed@example.com", timestamp: 1 },
			{ env: failing.env },
		);
		// Its key's, and the mark that KV lags (edge-lag.ts), refused as well.
		expect(failing.counts.put).toBe(2);
		// ... and two callbacks whose writes landed in the opposite order of their commits.
		await postCallback({ event: "spamreport", email: "z-late@example.com", timestamp: 1 });
		const earlier = await env.SUPPRESSIONS.get("s:z-late@example.com");
		await postCallback({
			event: "unsubscribe",
			email: "z-late@example.com",
			timestamp: 2,
			fromDomain: "news.example.com",
		});
		await env.SUPPRESSIONS.put("s:z-late@example.com", earlier as string);
		expect((await lookup("z-failed@example.com")).suppressed).toBe(false);
		expect((await lookup("z-late@example.com")).entries).toHaveLength(1);

		// A run within KV_WRITE_SETTLE_SECONDS of the changes leaves them queued: a request's own
		// KV write could still land after its check.
		await cron(Date.now(), small);
		// Nor a minute later: a KV read there may still return what was there before the change.
		await cron(Date.now() + 60_000, small);
		expect((await lookup("z-failed@example.com")).suppressed).toBe(false);
		const queued = await env.DB.prepare(
			"SELECT email FROM edge_pending WHERE email LIKE 'z-%' ORDER BY email",
		).all();
		expect(queued.results).toEqual([
			{ email: "z-failed@example.com" },
			{ email: "z-late@example.com" },
		]);
		// The next run checks them, however far its sweep is from them.
		await cron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, small);
		expect((await lookup("z-failed@example.com")).suppressed).toBe(true);
		expect((await lookup("z-late@example.com")).entries).toHaveLength(2);
	});

	it("checks queued addresses oldest first, so none waits behind newer changes", async () => {
		const failing = countingKv({ put: true });
		await postCallback(
			{ event: "spamreport", email: "z-old@example.com", timestamp: 1 },
			{ env: failing.env },
		);
		await new Promise((resolve) => setTimeout(resolve, 1100));
		const small = { ...env, RECONCILE_BATCH_SIZE: "2" };
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		// Two newer changes, of addresses that sort first, before the run: as many as it checks.
		await postCallback(
			["a-new-1@example.com", "a-new-2@example.com"].map((email) => ({
				event: "spamreport",
				email,
				timestamp: 1,
			})),
		);
		await cron(later, small);
		expect((await lookup("z-old@example.com")).suppressed).toBe(true);
	});

	it("checks at most RECONCILE_BATCH_SIZE queued addresses a run, and the next run the rest", async () => {
		const failing = countingKv({ put: true });
		await postCallback(
			["q1", "q2", "q3"].map((name) => ({
				event: "spamreport",
				email: `${name}@example.com`,
				timestamp: 1,
			})),
			{ env: failing.env },
		);
		expect(await countRows("edge_pending")).toBe(3);
		const small = { ...env, RECONCILE_BATCH_SIZE: "2" };
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		await cron(later, small);
		expect(await countRows("edge_pending")).toBe(1);
		await cron(later + 1000, small);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("keeps an address queued when it changes while a run checks it", async () => {
		await postCallback({ event: "spamreport", email: "busy@example.com", timestamp: 1 });
		let changed = false;
		// KV as the cron sees it: a callback for the address commits while the run reads its key.
		const kv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "get") {
					return async (...args: Parameters<KVNamespace["get"]>) => {
						const value = await Reflect.apply(target.get, target, args);
						if (!changed) {
							changed = true;
							const unsubscribe = { event: "unsubscribe", email: "busy@example.com", timestamp: 2 };
							expect((await postCallback(unsubscribe)).status).toBe(200);
						}
						return value;
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		await cron(later, { ...env, SUPPRESSIONS: kv });
		expect(changed).toBe(true);
		const queued = await env.DB.prepare("SELECT email FROM edge_pending").all();
		expect(queued.results).toEqual([{ email: "busy@example.com" }]);
		await cron(later + 300_000);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("a steady stream of expiries does not pause the sweeps", async () => {
		await postCallback({ event: "spamreport", email: "a-z@example.com", timestamp: 1 });
		const base = Math.floor(Date.now() / 1000);
		for (let i = 0; i < 8; i++) {
			const expiresAt = new Date((base + 120 * (Math.floor(i / 2) + 1)) * 1000).toISOString();
			await putSuppression(`x${i}@example.com`, { expiresAt });
		}
		// Both sweeps at the end of their cycle, and a key lost since.
		await parkSweeps();
		await env.SUPPRESSIONS.delete("s:a-z@example.com");
		const small = { ...env, RECONCILE_BATCH_SIZE: "2" };
		const runs: ReconcileLine[] = [];
		for (let run = 0; run < 3; run++) {
			runs.push(await cron((base + 120 * (run + 1) + 60) * 1000, small));
		}
		// Each run retires a full batch, so none is done, yet the new cycle repairs the key.
		expect(runs.map((run) => [run.expired, run.done])).toEqual([
			[2, false],
			[2, false],
			[2, false],
		]);
		expect((await lookup("a-z@example.com")).suppressed).toBe(true);
	});

	it("a bad setting fails the run with an error line naming it", async () => {
		const errors: string[] = [];
		vi.spyOn(console, "error").mockImplementation((line: string) => {
			errors.push(line);
		});
		const bad = { ...env, RECONCILE_BATCH_SIZE: "lots" } as Env;
		await expect(runCron(Date.now(), bad)).rejects.toThrow("RECONCILE_BATCH_SIZE");
		expect(errors.map((line) => JSON.parse(line))).toEqual([
			expect.objectContaining({
				level: "error",
				message: "cron not run",
				cron: "*/5 * * * *",
				error:
					"ApiError: Invalid setting RECONCILE_BATCH_SIZE (RECONCILE_BATCH_SIZE: must be a whole number from 1 to 5000)",
			}),
		]);
	});

	it("a failing retention does not keep the reconcile from running", async () => {
		await postCallback({ event: "spamreport", email: "r@example.com", timestamp: 1 });
		await env.SUPPRESSIONS.delete("s:r@example.com");
		const failing = envWithFailingSql("DELETE FROM events");
		const errors: string[] = [];
		vi.spyOn(console, "error").mockImplementation((line: string) => {
			errors.push(line);
		});
		await expect(runCron(Date.now(), failing)).rejects.toThrow(/injected/);
		expect(errors.map((line) => JSON.parse(line).message)).toEqual(["retention failed"]);
		expect((await lookup("r@example.com")).suppressed).toBe(true);
	});

	it("a KV write it cannot make stays queued for the next run, and the rest go on", async () => {
		await postCallback(
			["d1@example.com", "d2@example.com"].map((email) => ({
				event: "spamreport",
				email,
				timestamp: 1,
			})),
		);
		for (const email of ["d1@example.com", "d2@example.com"])
			await env.SUPPRESSIONS.delete(`s:${email}`);
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		// Both sweeps at the end of their cycle, so that only the queue leads the run to them.
		await parkSweeps();
		// KV refuses the first write of the run (one write per key per second) and takes the rest.
		let refused = 0;
		const kv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "put" && refused === 0) {
					return () => {
						refused++;
						return Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"));
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		expect(await cron(later, { ...env, SUPPRESSIONS: kv })).toMatchObject({
			fixed: 1,
			done: false,
		});
		expect(refused).toBe(1);
		const keys = async () => [
			(await env.SUPPRESSIONS.get("s:d1@example.com")) !== null,
			(await env.SUPPRESSIONS.get("s:d2@example.com")) !== null,
		];
		expect((await keys()).sort()).toEqual([false, true]);
		// The run marked KV as lagging, so lookups read the keyless address from D1 meanwhile.
		expect((await lookup("d1@example.com")).suppressed).toBe(true);
		expect((await lookup("d2@example.com")).suppressed).toBe(true);
		expect(await countRows("edge_pending")).toBe(1);
		expect(await cron(later + 300_000)).toMatchObject({ fixed: 1 });
		expect(await keys()).toEqual([true, true]);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("queues an address its D1 sweep could not fix, for a run after the sweep has moved on", async () => {
		await putSuppression("swept@example.com", { reason: "x" });
		// Only the D1 sweep leads the run to this address: nothing queued, the key missing.
		await env.DB.prepare("DELETE FROM edge_pending").run();
		await env.SUPPRESSIONS.delete("s:swept@example.com");
		const at = Date.now();
		const failing = countingKv({ put: true });
		expect(await cron(at, failing.env)).toMatchObject({ fixed: 0, done: false });
		expect(failing.counts.put).toBe(2); // the key, and the mark that KV lags
		expect(
			await env.DB.prepare("SELECT email, queued_at AS queuedAt FROM edge_pending").all(),
		).toMatchObject({ results: [{ email: "swept@example.com", queuedAt: Math.floor(at / 1000) }] });
		// The sweeps are past it: only the queue brings the next run back to it.
		await parkSweeps();
		expect(await cron(at + (KV_WRITE_SETTLE_SECONDS + 1) * 1000)).toMatchObject({ fixed: 1 });
		expect((await lookup("swept@example.com")).suppressed).toBe(true);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("a removal whose KV sync cannot read D1 still answers, and the cron deletes the key", async () => {
		await putSuppression("removed@example.com", { reason: "x" });
		const errors: Record<string, unknown>[] = [];
		vi.spyOn(console, "error").mockImplementation((line: string) => {
			errors.push(JSON.parse(line));
		});
		// D1 takes the removal but refuses the read of the entries the KV copy is made from.
		const response = await call(
			"/v1/suppressions/removed%40example.com",
			{ method: "DELETE", headers: { authorization: `Bearer ${tokens.admin}` } },
			envWithFailingSql("PARTITION BY email"),
		);
		expect(response.status).toBe(200);
		expect(await response.json()).toEqual({ email: "removed@example.com", removed: 1 });
		expect(errors).toEqual([
			expect.objectContaining({
				message: "edge sync could not read D1",
				requestId: expect.any(String),
				error: expect.stringContaining("injected"),
			}),
		]);
		// KV still holds the removed entry (the address reads as suppressed, never the reverse) until
		// the cron, to which the removal queued the address, deletes the key.
		expect((await lookup("removed@example.com")).suppressed).toBe(true);
		expect((await lookup("removed@example.com", "?consistent=true")).suppressed).toBe(false);
		await parkSweeps();
		await cron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect((await lookup("removed@example.com")).suppressed).toBe(false);
		expect(await env.SUPPRESSIONS.get("s:removed@example.com")).toBeNull();
	});

	it("logs one line for a request's or a run's failed KV writes, however many", async () => {
		// A Worker's logs hold 128 KB per invocation: a line per failed write in a KV outage (up to
		// 900 a run) would push the run's own line out.
		const warnings: Record<string, unknown>[] = [];
		vi.spyOn(console, "warn").mockImplementation((line: string) => {
			warnings.push(JSON.parse(line));
		});
		const emails = Array.from({ length: 12 }, (_, i) => `out${i}@example.com`);
		const failing = countingKv({ put: true });
		await postCallback(
			emails.map((email) => ({ event: "spamreport", email, timestamp: 1 })),
			{ env: failing.env },
		);
		expect(failing.counts.put).toBe(13); // 12 keys, and the mark that KV lags
		const failedLines = () => warnings.filter((line) => line.message === "edge write failed");
		expect(failedLines()).toEqual([
			expect.objectContaining({
				failed: 12,
				error: "Error: KV: injected failure (429 Too Many Requests)",
				requestId: expect.any(String),
			}),
		]);
		warnings.length = 0;
		await parkSweeps();
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		expect(await cron(later, failing.env)).toMatchObject({ fixed: 0 });
		expect(failing.counts.put).toBe(26);
		expect(failedLines()).toEqual([
			expect.objectContaining({
				failed: 12,
				error: "Error: KV: injected failure (429 Too Many Requests)",
			}),
		]);
		expect(await countRows("edge_pending")).toBe(12);
	});

	it("the failed-writes line counts the writes that failed, and is not logged when none did", async () => {
		const warnings: Record<string, unknown>[] = [];
		vi.spyOn(console, "warn").mockImplementation((line: string) => {
			warnings.push(JSON.parse(line));
		});
		const failedLines = () => warnings.filter((line) => line.message === "edge write failed");
		const refused = new Set(["s:no1@example.com", "s:no2@example.com", "s:no3@example.com"]);
		// KV refuses every write of three keys and takes the others.
		const refusing = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "put") {
					return (key: string, ...rest: unknown[]) =>
						refused.has(key)
							? Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"))
							: Reflect.apply(target.put, target, [key, ...rest]);
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const refusingEnv = { ...env, SUPPRESSIONS: refusing } as Env;
		await postCallback(
			["no1", "yes1", "no2", "yes2", "no3"].map((name) => ({
				event: "spamreport",
				email: `${name}@example.com`,
				timestamp: 1,
			})),
			{ env: refusingEnv },
		);
		expect(failedLines()).toEqual([expect.objectContaining({ failed: 3 })]);
		warnings.length = 0;
		await postCallback({ event: "spamreport", email: "yes3@example.com", timestamp: 1 });
		expect(failedLines()).toEqual([]);

		// The cron checks all six queued addresses and writes the three keys KV refused again.
		await parkSweeps();
		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		expect(await cron(at, refusingEnv)).toMatchObject({ checked: 6, fixed: 0 });
		expect(failedLines()).toEqual([expect.objectContaining({ failed: 3 })]);
		warnings.length = 0;
		at += (KV_WRITE_SETTLE_SECONDS + 300) * 1000;
		expect(await cron(at)).toMatchObject({ fixed: 3 });
		expect(failedLines()).toEqual([]);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("addresses whose KV writes keep failing do not hold up the rest of the queue", async () => {
		const batch = { ...env, RECONCILE_BATCH_SIZE: "2" } as Env;
		const stuck = new Set(["s:stuck1@example.com", "s:stuck2@example.com"]);
		// KV refuses every write of these two keys, run after run.
		const refusing = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "put") {
					return (key: string, ...rest: unknown[]) =>
						stuck.has(key)
							? Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"))
							: Reflect.apply(target.put, target, [key, ...rest]);
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const refusingEnv = { ...batch, SUPPRESSIONS: refusing } as Env;
		await postCallback(
			["stuck1@example.com", "stuck2@example.com"].map((email) => ({
				event: "spamreport",
				email,
				timestamp: 1,
			})),
			{ env: refusingEnv },
		);
		// A later change whose own KV write failed once.
		await new Promise((resolve) => setTimeout(resolve, 1100));
		await postCallback(
			{ event: "spamreport", email: "victim@example.com", timestamp: 1 },
			{ env: countingKv({ put: true }).env },
		);
		expect(await env.SUPPRESSIONS.get("s:victim@example.com")).toBeNull();
		for (let i = 1; i <= 3; i++) {
			await parkSweeps();
			await cron(Date.now() + (KV_WRITE_SETTLE_SECONDS + i * 300) * 1000, refusingEnv);
		}
		expect(await env.SUPPRESSIONS.get("s:victim@example.com")).not.toBeNull();
		expect(await countRows("edge_pending")).toBe(2);
	});

	it("a run that overlaps another never takes off the queue a change made after both read it", async () => {
		// The spam report's own KV write fails: the address is queued.
		await postCallback(
			{ event: "spamreport", email: "ov@example.com", timestamp: 1 },
			{ env: countingKv({ put: true }).env },
		);
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		await parkSweeps();
		// Run A reads the queue and D1, then its KV read stalls ...
		let reached!: () => void;
		const atGet = new Promise<void>((resolve) => {
			reached = resolve;
		});
		let release!: () => void;
		const gate = new Promise<void>((resolve) => {
			release = resolve;
		});
		const slowKv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "get") {
					return async (...args: Parameters<KVNamespace["get"]>) => {
						reached();
						await gate;
						return Reflect.apply(target.get, target, args);
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const runA = runCron(later, { ...env, SUPPRESSIONS: slowKv } as Env);
		await atGet;
		// ... while run B checks the address and takes it off the queue ...
		await parkSweeps();
		await runCron(later);
		expect((await lookup("ov@example.com")).suppressed).toBe(true);
		// ... and, a second later, the operator lifts the entry, whose own KV delete fails: queued
		// again, as version 0 once more.
		await new Promise((resolve) => setTimeout(resolve, 1100));
		const removed = await call(
			"/v1/suppressions/ov%40example.com",
			{ method: "DELETE", headers: { authorization: `Bearer ${tokens.admin}` } },
			countingKv({ delete: true }).env,
		);
		expect(removed.status).toBe(200);
		expect({ afterRemoval: await countRows("edge_pending") }).toEqual({ afterRemoval: 1 });
		await parkSweeps();
		release();
		await runA;
		// Run A checked the address against what it read before the removal: the removal stays queued.
		expect({ afterRunA: await countRows("edge_pending") }).toEqual({ afterRunA: 1 });
		await parkSweeps();
		await runCron(later + 300_000);
		expect((await lookup("ov@example.com")).suppressed).toBe(false);
	});

	it("a run that dies half way leaves consistent state and the next run finishes", async () => {
		await postCallback({ event: "spamreport", email: "d@example.com", timestamp: 1 });
		await env.SUPPRESSIONS.delete("s:d@example.com");
		// D1 refuses the run's last write, the position of its sweeps.
		const failing = envWithFailingSql("INSERT INTO cron_state");
		await expect(runCron(Date.now(), failing)).rejects.toThrow(/injected/);
		expect((await lookup("d@example.com", "?consistent=true")).suppressed).toBe(true);
		const later = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		expect(await cron(later)).toMatchObject({ done: true });
		expect((await lookup("d@example.com")).suppressed).toBe(true);
	});
});

describe("a saved sweep position it cannot read", () => {
	it.each([
		["not JSON", "d1=a@example.com"],
		["of other types", '{"d1":5,"kv":null}'],
		["without the KV sweep", '{"d1":true}'],
		["an array", '["", ""]'],
	])(
		"(%s) starts a new cycle, which repairs and saves a readable position",
		async (_name, value) => {
			await putSuppression("pos@example.com", { reason: "x" });
			await env.DB.prepare("DELETE FROM edge_pending").run();
			await env.SUPPRESSIONS.delete("s:pos@example.com");
			await env.DB.prepare(
				"INSERT OR REPLACE INTO cron_state (name, value) VALUES ('reconcile', ?)",
			)
				.bind(value)
				.run();
			expect(await cron()).toMatchObject({ fixed: 1, done: true });
			expect((await lookup("pos@example.com")).suppressed).toBe(true);
			expect(
				await env.DB.prepare("SELECT value FROM cron_state WHERE name = 'reconcile'").first(
					"value",
				),
			).toBe('{"d1":"","kv":""}');
		},
	);
});

describe("the KV sweep's saved cursor", () => {
	it("is dropped when KV refuses it, the sweep starting over instead of every run failing", async () => {
		// Keys without entries, more than one run lists: each run deletes the ones it lists.
		for (let i = 0; i < 6; i++) await env.SUPPRESSIONS.put(`s:orphan${i}@example.com`, "[]");
		const small = { ...env, RECONCILE_BATCH_SIZE: "2" };
		await cron(Date.now(), small);
		const saved = async () =>
			JSON.parse(
				((await env.DB.prepare("SELECT value FROM cron_state WHERE name = 'reconcile'").first(
					"value",
				)) as string) ?? "{}",
			).kv;
		expect(await saved()).toMatch(/./);
		// KV no longer takes the cursor (an expired one, say): a run must still save its state.
		const refusing = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "list") {
					return (options?: KVNamespaceListOptions) =>
						options?.cursor
							? Promise.reject(new Error("KV list failed: invalid cursor"))
							: target.list(options);
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		await cron(Date.now(), { ...small, SUPPRESSIONS: refusing });
		expect(await saved()).toBe("");
		let runs = 0;
		while (!(await cron(Date.now(), small)).done) expect(++runs).toBeLessThan(10);
		expect((await env.SUPPRESSIONS.list({ prefix: "s:orphan" })).keys).toEqual([]);
	});

	it("still fails the run when listing fails without one", async () => {
		const failing = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "list") return () => Promise.reject(new Error("KV is down"));
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		await expect(runCron(Date.now(), { ...env, SUPPRESSIONS: failing })).rejects.toThrow(
			"KV is down",
		);
	});
});
