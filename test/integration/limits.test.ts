import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import {
	call,
	countingD1,
	countingKv,
	countRows,
	lookup,
	postCallback,
	putSuppression,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

beforeEach(resetDatabase);

/** The longest reason an entry takes, of characters JSON writes as `\u0001` (six bytes each). */
const WIDEST_REASON = "\u0001".repeat(4096);

/**
 * Stores `perAddress` operator entries (one per scope, each with the widest reason) for each of
 * `addresses` addresses `<prefix><n>@example.com`, straight into D1 as a long history of PUTs
 * would leave them.
 */
async function seedWideEntries(prefix: string, addresses: number, perAddress: number) {
	const now = Math.floor(Date.now() / 1000);
	await env.DB.prepare(
		// D1 binds a JavaScript number as a REAL: the counts are made integers before dividing.
		`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < CAST(?1 AS INTEGER) - 1)
		INSERT INTO suppressions (email, list, scope, origin, reason, event_count, created_at,
			updated_at, expires_at, change_note)
		SELECT ?2 || (i / CAST(?3 AS INTEGER)) || '@example.com', 'manual',
			'd' || (i % CAST(?3 AS INTEGER)) || '.example.com', 'api',
			?4, 0, ?5, ?5, NULL, 'seeded' FROM n`,
	)
		.bind(addresses * perAddress, prefix, perAddress, WIDEST_REASON, now)
		.run();
}

describe("KV's size limits on the edge copy", () => {
	it("the cron's bulk reads stay within KV's 25 MiB per bulk get, whatever the entries", async () => {
		// 11 of the widest entries render to about 273 KB, so 100 such keys take about 27 MB: more
		// than one bulk get may return (25 MiB in all).
		await seedWideEntries("wide", 100, 11);
		const at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 60) * 1000;
		await expect(runCron(at).then(() => "ran", String)).resolves.toBe("ran");
		// The next run sweeps the same addresses again, reading their keys back in bulk.
		await expect(runCron(at + 300_000).then(() => "ran", String)).resolves.toBe("ran");
		const fromKv = await lookup("wide7@example.com");
		expect(fromKv.suppressed).toBe(true);
		expect(fromKv.entries).toHaveLength(11);
		const check = await call("/v1/suppressions/check", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
			body: JSON.stringify({
				emails: Array.from({ length: 100 }, (_, i) => `wide${i}@example.com`),
			}),
		});
		expect(check.status).toBe(200);
		expect(((await check.json()) as { suppressedCount: number }).suppressedCount).toBe(100);
	});

	it("an address whose entries render to more than KV's 25 MiB value still reads as suppressed", async () => {
		// 1,100 of the widest entries render to about 27 MB: more than one KV value holds.
		await seedWideEntries("huge", 1, 1100);
		await putSuppression("huge0@example.com", { list: "manual", scope: "*", reason: "asked" });
		const fromKv = await lookup("huge0@example.com", "?fromDomain=other.example");
		expect(fromKv.suppressed).toBe(true);
		expect(fromKv.entries).toEqual([expect.objectContaining({ scope: "*", reason: "asked" })]);
		const at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 60) * 1000;
		await expect(runCron(at).then(() => "ran", String)).resolves.toBe("ran");
		expect((await lookup("huge0@example.com", "?fromDomain=other.example")).suppressed).toBe(true);
	});
});

describe("a Worker's 128 MB of memory", () => {
	it("a page of events stops before 4 MiB of stored events, and its cursor leads on", async () => {
		// Each event carries about 200 KB in `extra`, as a callback of 256 KiB may: a page of 1000
		// such events would be 200 MB.
		const wide = "x".repeat(200_000);
		for (let i = 0; i < 40; i++) {
			const response = await postCallback({
				event: "open",
				email: "wide-events@example.com",
				timestamp: 1_767_225_600 + i,
				padding: wide,
			});
			expect(response.status).toBe(200);
		}
		const seen = new Set<string>();
		let cursor: string | null = null;
		let pages = 0;
		do {
			const query = `email=wide-events%40example.com&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
			const response = await call(`/v1/events?${query}`, {
				headers: { authorization: `Bearer ${tokens.lookup}` },
			});
			expect(response.status).toBe(200);
			const text = await response.text();
			expect(text.length).toBeLessThan(4 * 1024 * 1024 + 210_000);
			const page = JSON.parse(text) as { events: Array<{ id: string }>; cursor: string | null };
			for (const event of page.events) seen.add(event.id);
			cursor = page.cursor;
			pages++;
		} while (cursor !== null && pages < 10);
		expect(seen.size).toBe(40);
		expect(pages).toBe(2);
	});

	it("a page of events counts the bytes of stored text, not its characters", async () => {
		// 80,000 CJK characters are 240,000 bytes of UTF-8: 20 such events hold only 1.6 million
		// characters but 4.8 MB, more than one page may carry.
		const wide = "漢".repeat(80_000);
		for (let i = 0; i < 20; i++) {
			const response = await postCallback({
				event: "open",
				email: "cjk-events@example.com",
				timestamp: 1_767_225_600 + i,
				padding: wide,
			});
			expect(response.status).toBe(200);
		}
		const response = await call("/v1/events?email=cjk-events%40example.com&limit=1000", {
			headers: { authorization: `Bearer ${tokens.lookup}` },
		});
		expect(response.status).toBe(200);
		const bytes = new Uint8Array(await response.arrayBuffer());
		expect(bytes.byteLength).toBeLessThan(4 * 1024 * 1024 + 250_000);
		const page = JSON.parse(new TextDecoder().decode(bytes)) as {
			events: unknown[];
			cursor: string | null;
		};
		expect(page.events.length).toBeLessThan(20);
		expect(page.cursor).not.toBeNull();
	});
});

describe("an import of more than 10,000 lines", () => {
	// 8 MiB of two-byte lines are four million of them: reading every one before counting them
	// took 14 s of CPU for NDJSON (a thrown SyntaxError each) and about 1 GB of memory for CSV.
	const MANY = (8 * 1024 * 1024) / 2 - 64;

	async function importBody(body: string, type: string) {
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": type },
			body,
		});
		return {
			status: response.status,
			body: (await response.json()) as { error: { message: string } },
		};
	}

	it("is refused, as NDJSON of lines that are not JSON, before the rest are read", async () => {
		const { status, body } = await importBody("x\n".repeat(MANY), "application/x-ndjson");
		expect(status).toBe(400);
		expect(body.error.message).toBe("An import holds at most 10000 lines");
	});

	it("is refused, as CSV of one-field lines, before the rest are read", async () => {
		const header = "email,list,scope,reason,source,created_at,updated_at,expires_at\n";
		const { status, body } = await importBody(header + "a\n".repeat(MANY), "text/csv");
		expect(status).toBe(400);
		expect(body.error.message).toBe("An import holds at most 10000 lines");
	});

	it("of 10,000 lines and blank lines is read whole", async () => {
		const lines = Array.from({ length: 10_000 }, (_, i) => `x${i}\r\n\n`).join("");
		const { status, body } = await importBody(lines, "application/x-ndjson");
		expect(status).toBe(200);
		const { failed } = body as unknown as { failed: Array<{ line: number }> };
		expect(failed).toHaveLength(10_000);
		expect(failed.at(-1)).toEqual({ line: 19_999, message: "is not valid JSON" });
	});
});

describe("a check that repeats an address with many entries", () => {
	it("decides the address once: 1,000 copies of an address with 1,000 entries", async () => {
		// One unsubscribe entry per sender domain, as 1,000 unsubscribes from as many domains (ten
		// callbacks) leave them. Deciding them for each copy took 880 ms of CPU in local workerd.
		const now = Math.floor(Date.now() / 1000);
		await env.DB.prepare(
			`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
			INSERT INTO suppressions (email, list, scope, origin, reason, event_count, created_at,
				updated_at, expires_at, change_note)
			SELECT 'many@example.com', 'unsubscribe', 'xn--d' || i || '.example', 'event', NULL, 1,
				?1, ?1, NULL, 'seeded' FROM n`,
		)
			.bind(now)
			.run();
		// Its KV key, written with all 1,001 entries.
		await putSuppression("many@example.com", { list: "manual", scope: "other.example" });
		const check = async (fromDomain: string) => {
			const response = await call("/v1/suppressions/check", {
				method: "POST",
				headers: { authorization: `Bearer ${tokens.lookup}` },
				body: JSON.stringify({
					emails: [...Array(999).fill("Many@example.com"), "nobody@example.com"],
					fromDomain,
				}),
			});
			expect(response.status).toBe(200);
			return (await response.json()) as {
				results: Array<{ normalized: string; suppressed: boolean; lists: string[] }>;
				suppressedCount: number;
				deliverableCount: number;
			};
		};
		const unsubscribed = await check("xn--d7.example");
		expect(unsubscribed.suppressedCount).toBe(999);
		expect(unsubscribed.results[998]).toMatchObject({
			normalized: "many@example.com",
			suppressed: true,
			lists: ["unsubscribe"],
		});
		expect(unsubscribed.results[999]).toMatchObject({ suppressed: false, lists: [] });
		const other = await check("zz.example");
		expect([other.suppressedCount, other.deliverableCount]).toEqual([0, 1000]);
	});
});

describe("a check of 1,000 addresses whose entries are large", () => {
	it("reads at most 25 MiB of KV values, and still finds every address suppressed", async () => {
		// Two of the widest entries render to about 50 KB: under the 255 KiB a KV value once took,
		// so 1,000 such keys read by the check's parallel bulk gets came to about 50 MB at once, and
		// 1,000 keys of 255 KiB each to 261 MB, twice a Worker's 128 MB.
		await seedWideEntries("big", 1000, 2);
		// The cron writes every address's key, as a history of PUTs would have.
		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 60) * 1000;
		for (let run = 0; run < 4; run++, at += 300_000) await runCron(at);
		expect(await env.SUPPRESSIONS.get("s:big999@example.com", "text")).not.toBeNull();
		let valueBytes = 0;
		const encoder = new TextEncoder();
		const kv = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "get") {
					return async (...args: Parameters<KVNamespace["get"]>) => {
						const values = (await Reflect.apply(target.get, target, args)) as unknown;
						const texts = values instanceof Map ? [...values.values()] : [values];
						for (const text of texts) {
							if (typeof text === "string") valueBytes += encoder.encode(text).byteLength;
						}
						return values;
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const response = await call(
			"/v1/suppressions/check",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.lookup}` },
				body: JSON.stringify({
					emails: Array.from({ length: 1000 }, (_, i) => `big${i}@example.com`),
					fromDomain: "d1.example.com",
				}),
			},
			{ ...env, SUPPRESSIONS: kv },
		);
		expect(response.status).toBe(200);
		const body = (await response.json()) as { suppressedCount: number };
		expect(body.suppressedCount).toBe(1000);
		expect(valueBytes).toBeGreaterThan(0);
		expect(valueBytes).toBeLessThanOrEqual(25 * 1024 * 1024);
	}, 120_000);
});

describe("an address with thousands of entries", () => {
	it("a callback that changes it reads back only what its KV value can hold", async () => {
		// 2,000 unsubscribes from as many sender domains, each with the longest reason, which D1's
		// answer writes as `\u0001`, six bytes each: reading them all back took a callback's batch
		// 49.6 MB and 328 ms, and 5,000 of them more than a Worker's 128 MB. They expire in an hour.
		const now = Math.floor(Date.now() / 1000);
		await env.DB.prepare(
			`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1999)
			INSERT INTO suppressions (email, list, scope, origin, reason, event_count, created_at,
				updated_at, expires_at, change_note)
			SELECT 'many@example.com', 'unsubscribe', 'd' || i || '.example', 'event', ?1, 1,
				?2, ?2, ?2 + 3600, 'seeded' FROM n`,
		)
			.bind(WIDEST_REASON, now)
			.run();
		let batchBytes = 0;
		const db = new Proxy(env.DB, {
			get(target, property) {
				if (property === "batch") {
					return async (statements: D1PreparedStatement[]) => {
						const results = await target.batch(statements);
						batchBytes += JSON.stringify(results).length;
						return results;
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		// An unsubscribe that never expires, its scope the last of the address's entries in order.
		const response = await postCallback(
			{
				event: "unsubscribe",
				email: "many@example.com",
				timestamp: now - 10,
				fromDomain: "zz.example",
			},
			{ env: { ...env, DB: db } },
		);
		expect(response.status).toBe(200);
		expect(batchBytes).toBeLessThan(1024 * 1024);
		// The key holds the marker, and does not expire with the entries read: one read later never
		// does.
		const { keys } = await env.SUPPRESSIONS.list({ prefix: "s:many@example.com" });
		expect(keys).toHaveLength(1);
		expect(keys[0]?.expiration).toBeUndefined();
		expect(await env.SUPPRESSIONS.get("s:many@example.com", "text")).toBe('"d1"');
		const found = await lookup("many@example.com", "?fromDomain=zz.example");
		expect(found.suppressed).toBe(true);
	});
});

describe("the 1,000 operations one invocation may make to KV and D1", () => {
	it("a callback that changes 1,000 addresses writes some keys itself and the cron the rest", async () => {
		// MAX_EVENTS_PER_REQUEST at its largest, and 1,000 hard bounces (about 90 KB): one KV put
		// per address after the D1 batch made 1,001 operations, and production refuses those past
		// 1,000 (local KV does not count them).
		const emails = Array.from({ length: 1000 }, (_, i) => `cap${i}@example.com`);
		const kv = countingKv();
		const d1 = countingD1();
		const testEnv = { ...kv.env, DB: d1.env.DB, MAX_EVENTS_PER_REQUEST: "1000" } as Env;
		const response = await postCallback(
			emails.map((email) => ({ event: "bounce", bounceType: "hard_bounce", email, timestamp: 1 })),
			{ env: testEnv },
		);
		expect(response.status).toBe(200);
		const { put, delete: deleted, get, list } = kv.counts;
		expect(put + deleted + get + list + d1.counts.batches + d1.counts.single).toBeLessThanOrEqual(
			1000,
		);
		expect(put).toBeGreaterThan(0);
		// Every change queued its address in the same transaction: the cron writes the others.
		expect(await countRows("edge_pending")).toBe(1000);
		let at = Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		for (let run = 0; run < 3; run++, at += 300_000) await runCron(at);
		expect(await countRows("edge_pending")).toBe(0);
		const { keys } = await env.SUPPRESSIONS.list({ prefix: "s:cap" });
		expect(keys).toHaveLength(1000);
		expect((await lookup("cap999@example.com")).suppressed).toBe(true);
	}, 60_000);
});
