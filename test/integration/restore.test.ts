import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { LAG_KEY } from "../../src/suppressions/edge-lag";
import {
	call,
	countRows,
	getJson,
	lookup,
	postCallback,
	putSuppression,
	type ReconcileLine,
	resetDatabase,
	runCron,
	runCronReconciled,
	tokens,
} from "../helpers";

/**
 * What restoring D1 to an earlier point (Time Travel, or an export replayed) does to the service:
 * D1 goes back, KV stays as it was. The restore is simulated by copying every table's rows aside
 * and putting them back by SQL, triggers' work undone, as a restore leaves the database exactly as
 * it was (docs/deploy.md, "Backups and restoring D1").
 */

const admin = { authorization: `Bearer ${tokens.admin}` };
const HEADER = "email,list,scope,reason,source,created_at,updated_at,expires_at";
const FIVE_MINUTES = 300_000;

/** The tables a restore brings back: every one the migrations made. */
async function tables(): Promise<string[]> {
	const { results } = await env.DB.prepare(
		"SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'd1_%' AND name NOT LIKE 'snapshot_%'",
	).all<{ name: string }>();
	return results.map((row) => row.name);
}

/** The columns of a table that an insert may name (not its generated ones). */
async function columns(table: string): Promise<string> {
	const { results } = await env.DB.prepare(
		"SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0",
	)
		.bind(table)
		.all<{ name: string }>();
	return results.map((row) => `"${row.name}"`).join(", ");
}

/** Copies every table's rows aside: the point a restore goes back to. */
async function snapshot(): Promise<void> {
	for (const table of await tables()) {
		await env.DB.batch([
			env.DB.prepare(`DROP TABLE IF EXISTS "snapshot_${table}"`),
			env.DB.prepare(`CREATE TABLE "snapshot_${table}" AS SELECT * FROM "${table}"`),
		]);
	}
}

/**
 * Puts the copied rows back in place of the present ones, as a restore does. Deleting and inserting
 * fires the triggers (history, the edge queue, the refused-callback total), so the tables they
 * write are put back last, which leaves each table exactly as copied.
 */
async function restore(): Promise<void> {
	const all = await tables();
	const written = [
		"suppression_history",
		"edge_pending",
		"rejected_storage",
		"soft_bounce_recheck",
	];
	const order = [...all.filter((table) => !written.includes(table)), ...written];
	for (const table of order) {
		const list = await columns(table);
		await env.DB.batch([
			env.DB.prepare(`DELETE FROM "${table}"`),
			env.DB.prepare(`INSERT INTO "${table}" (${list}) SELECT ${list} FROM "snapshot_${table}"`),
		]);
	}
	for (const table of all) await env.DB.prepare(`DROP TABLE "snapshot_${table}"`).run();
}

const cron = runCronReconciled;

async function importNew(emails: string[]): Promise<void> {
	const response = await call("/v1/suppressions/import", {
		method: "POST",
		headers: { ...admin, "content-type": "text/csv" },
		body: [HEADER, ...emails.map((email) => `${email},manual,*,,api,,,`)].join("\n"),
	});
	expect(response.status).toBe(200);
}

async function remove(email: string, query = ""): Promise<void> {
	const response = await call(`/v1/suppressions/${encodeURIComponent(email)}${query}`, {
		method: "DELETE",
		headers: admin,
	});
	expect(response.status).toBe(200);
}

async function erase(email: string): Promise<void> {
	const response = await call(`/v1/addresses/${encodeURIComponent(email)}?suppressions=true`, {
		method: "DELETE",
		headers: admin,
	});
	expect(response.status).toBe(200);
}

/** How many of the addresses have a KV key. */
async function keysIn(emails: string[]): Promise<number> {
	let found = 0;
	for (let i = 0; i < emails.length; i += 100) {
		const keys = emails.slice(i, i + 100).map((email) => `s:${email}`);
		const values = await env.SUPPRESSIONS.get(keys, "text");
		found += [...values.values()].filter((value) => value !== null).length;
	}
	return found;
}

/** How many of the addresses the (KV-served) lookup calls suppressed. */
async function suppressedCount(emails: string[]): Promise<number> {
	let count = 0;
	for (const email of emails) if ((await lookup(email)).suppressed) count++;
	return count;
}

async function statsTotals(): Promise<Record<string, number>> {
	const response = await getJson("/v1/stats?since=2025-12-01T00:00:00Z");
	expect(response.status).toBe(200);
	return ((await response.json()) as { totals: Record<string, number> }).totals;
}

const day = (n: number) => Date.UTC(2026, 0, n) / 1000;

const addresses = (prefix: string, count: number) =>
	Array.from({ length: count }, (_, i) => `${prefix}${String(i).padStart(3, "0")}@example.com`);

describe("a restore of D1 to an earlier point, KV left as it was", () => {
	beforeEach(resetDatabase);

	it("leaves keys both ways until the sweeps repair them; events, stats and queues stay consistent", async () => {
		// Before the restore point: suppressions from events and an operator, delivered mail, a
		// rollup of the stats, and events above its mark.
		await postCallback([
			{ event: "bounce", bounceType: "hard_bounce", email: "kept@example.com", timestamp: day(2) },
			{ event: "spamreport", email: "erased@example.com", timestamp: day(2) },
			{ event: "delivered", email: "d1@example.com", timestamp: day(2) },
		]);
		await putSuppression("lifted@example.com", { reason: "asked" });
		await runCron(Date.now());
		await postCallback({ event: "delivered", email: "d2@example.com", timestamp: day(3) });
		const totalsThen = await statsTotals();
		const eventsThen = await countRows("events");
		await snapshot();

		// After it: new suppressions, a removal, an erasure, more mail, a rollup and a full repair.
		await postCallback([
			{ event: "bounce", bounceType: "hard_bounce", email: "new@example.com", timestamp: day(4) },
			{ event: "delivered", email: "d3@example.com", timestamp: day(4) },
		]);
		await putSuppression("manual-new@example.com", { reason: "asked" });
		await remove("lifted@example.com");
		await erase("erased@example.com");
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);

		await restore();
		// D1 is back: the later events, entries, removal and erasure are gone.
		expect(await countRows("events")).toBe(eventsThen);
		expect(await statsTotals()).toEqual(totalsThen);
		expect((await lookup("new@example.com", "?consistent=true")).suppressed).toBe(false);
		expect((await lookup("lifted@example.com", "?consistent=true")).suppressed).toBe(true);
		expect((await lookup("erased@example.com", "?consistent=true")).suppressed).toBe(true);
		// KV is not: keys of entries D1 no longer has answer suppressed (fail-closed), and the
		// entries D1 has again, whose keys went with the removal and the erasure, read deliverable.
		expect((await lookup("new@example.com")).suppressed).toBe(true);
		expect((await lookup("manual-new@example.com")).suppressed).toBe(true);
		expect((await lookup("lifted@example.com")).suppressed).toBe(false);
		expect((await lookup("erased@example.com")).suppressed).toBe(false);
		expect((await lookup("kept@example.com")).suppressed).toBe(true);

		// Mail after the restore: new events are stored (seq above the restored mark) and counted
		// once, rolled up or not; nothing the restore took away comes back.
		expect(
			await (
				await postCallback({ event: "delivered", email: "d4@example.com", timestamp: day(5) })
			).json(),
		).toMatchObject({ stored: 1 });
		const expected = { ...totalsThen, delivered: (totalsThen.delivered ?? 0) + 1 };
		expect(await statsTotals()).toEqual(expected);

		// The cron repairs KV within one cycle of the sweeps: here one run (four addresses, a few
		// keys, the default batch), whose line says done.
		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		const runs: ReconcileLine[] = [];
		do {
			at += FIVE_MINUTES;
			runs.push(await cron(at));
		} while (!runs.at(-1)?.done && runs.length < 5);
		expect(runs.map((run) => run.done)).toEqual([true]);
		expect(await statsTotals()).toEqual(expected);
		for (const email of ["new@example.com", "manual-new@example.com"])
			expect((await lookup(email)).suppressed).toBe(false);
		for (const email of ["lifted@example.com", "erased@example.com", "kept@example.com"])
			expect((await lookup(email)).suppressed).toBe(true);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("reads deliverable what D1 suppresses again for ceil(N / RECONCILE_BATCH_SIZE) runs, and a restored mid-cycle position ends a cycle early", async () => {
		const batch = { ...env, RECONCILE_BATCH_SIZE: "50" };
		const emails = addresses("r", 120);
		await importNew(emails);
		// Every key written and checked, and a cycle under way: the D1 sweep past the 50th address.
		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		for (let i = 0; i < 5 && (await countRows("edge_pending")) > 0; i++) {
			at += FIVE_MINUTES;
			await cron(at, batch);
		}
		expect(await countRows("edge_pending")).toBe(0);
		await env.DB.prepare("INSERT OR REPLACE INTO cron_state (name, value) VALUES ('reconcile', ?)")
			.bind(JSON.stringify({ d1: emails[49], kv: true }))
			.run();
		await snapshot();

		// After the restore point every entry is removed, and with it its key.
		for (const email of emails) await remove(email);
		expect(await suppressedCount(emails)).toBe(0);
		await restore();
		expect((await lookup(emails[0] as string, "?consistent=true")).suppressed).toBe(true);
		// All 120 read deliverable although D1 suppresses them: nothing marks KV as lagging.
		expect(await suppressedCount(emails)).toBe(0);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();

		// The restored position: the cycle goes on at the 51st address and ends after two runs,
		// done, while the first 50 still read deliverable.
		const counts: number[] = [];
		const done: boolean[] = [];
		for (let i = 0; i < 2; i++) {
			at += FIVE_MINUTES;
			done.push((await cron(at, batch)).done);
			counts.push(await suppressedCount(emails));
		}
		expect(counts).toEqual([50, 70]);
		expect(done).toEqual([false, true]);
		// The next cycle reaches them: 50 a run.
		at += FIVE_MINUTES;
		expect((await cron(at, batch)).done).toBe(false);
		expect(await suppressedCount(emails)).toBe(120);
	});

	it("answers suppressed what D1 no longer has until the KV sweep lists its key: ceil(keys / RECONCILE_BATCH_SIZE) runs", async () => {
		const batch = { ...env, RECONCILE_BATCH_SIZE: "50" };
		await snapshot();
		const emails = addresses("n", 120);
		await importNew(emails);
		await restore();
		expect((await lookup(emails[0] as string, "?consistent=true")).suppressed).toBe(false);
		expect(await suppressedCount(emails)).toBe(120);

		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		const keys: number[] = [];
		const done: boolean[] = [];
		do {
			at += FIVE_MINUTES;
			done.push((await cron(at, batch)).done);
			keys.push(await keysIn(emails));
		} while (!done.at(-1) && done.length < 10);
		// 50 keys listed a run (the first listing also holds no other key here).
		expect(keys).toEqual([70, 20, 0]);
		expect(done).toEqual([false, false, true]);
		expect(await suppressedCount(emails)).toBe(0);
	});

	it("with the sweep position reset, the first run whose line says done has written every key", async () => {
		const batch = { ...env, RECONCILE_BATCH_SIZE: "50" };
		const emails = addresses("p", 120);
		await importNew(emails);
		await env.DB.prepare("INSERT OR REPLACE INTO cron_state (name, value) VALUES ('reconcile', ?)")
			.bind(JSON.stringify({ d1: emails[49], kv: true }))
			.run();
		await snapshot();
		for (const email of emails) await remove(email);
		await restore();
		// What the runbook does after a restore: the cycle starts over at the first address.
		await env.DB.prepare("DELETE FROM cron_state WHERE name = 'reconcile'").run();

		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		const keys: number[] = [];
		const suppressed: number[] = [];
		const done: boolean[] = [];
		do {
			at += FIVE_MINUTES;
			done.push((await cron(at, batch)).done);
			keys.push(await keysIn(emails));
			suppressed.push(await suppressedCount(emails));
		} while (!done.at(-1) && done.length < 10);
		// ceil(120 / 50) = 3 runs. The queue the restore brought back (the import's 120 addresses)
		// is drained first, 50 a run, and the sweep leaves out what the drain has just checked.
		// A drain that writes keys and leaves more queued marks KV as lagging, so here the lookups
		// read D1 meanwhile; a restore to a point whose queue was empty has no such mark (above).
		expect(done).toEqual([false, false, true]);
		expect(keys).toEqual([50, 100, 120]);
		expect(suppressed).toEqual([120, 120, 120]);
	});

	it("a mark put by hand sends lookups to D1 while the sweep has not reached an address", async () => {
		const emails = addresses("m", 20);
		await importNew(emails);
		await snapshot();
		for (const email of emails) await remove(email);
		await restore();
		expect(await suppressedCount(emails)).toBe(0);
		// `wrangler kv key put edge:lagging <until>`: the Unix second until which KV lags at least.
		const until = Math.floor(Date.now() / 1000) + 6 * 3600;
		await env.SUPPRESSIONS.put(LAG_KEY, String(until));
		// This isolate read the mark (none) a moment ago; another isolate, or this one 30 seconds
		// on, reads it afresh.
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(Date.now() + 31_000);
			expect(await suppressedCount(emails)).toBe(20);
		} finally {
			vi.useRealTimers();
		}
	});

	it("a mark put by hand for longer than a writer's is not shortened by it", async () => {
		const until = Math.floor(Date.now() / 1000) + 6 * 3600;
		await env.SUPPRESSIONS.put(LAG_KEY, String(until));
		// An import of more addresses than a request writes marks KV as lagging for 15 minutes, and
		// so does a cron run that writes keys and leaves more queued.
		await importNew(addresses("w", 401));
		expect(Number(await env.SUPPRESSIONS.get(LAG_KEY))).toBe(until);
		await cron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, {
			...env,
			RECONCILE_BATCH_SIZE: "50",
		});
		expect(Number(await env.SUPPRESSIONS.get(LAG_KEY))).toBe(until);
	});
});
