import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ApiError } from "../../src/errors";
import { listRejected } from "../../src/events/rejected-store";
import { call, countingD1, postCallback, resetDatabase, tokens } from "../helpers";

type Page = { cursor: string | null } & Record<string, unknown>;

/**
 * Walks every page of `path` (which has a query) and returns the rows D1 read for the last page,
 * checking that the walk sees `pages` full pages of distinct rows and then ends.
 */
async function lastPageRowsRead(path: string, pages: number, list: string): Promise<number> {
	let cursor: string | null = null;
	let rowsRead = 0;
	const seen = new Set<unknown>();
	let listed = 0;
	for (let i = 0; i < pages; i++) {
		const counting = countingD1();
		const url = cursor === null ? path : `${path}&cursor=${encodeURIComponent(cursor)}`;
		const response = await call(
			url,
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			counting.env,
		);
		expect(response.status).toBe(200);
		const page = (await response.json()) as Page;
		const rows = page[list] as Array<{ id: unknown }>;
		listed += rows.length;
		for (const row of rows) seen.add(row.id);
		cursor = page.cursor;
		rowsRead = counting.counts.rowsRead;
		if (i < pages - 1) expect(cursor).not.toBeNull();
	}
	expect(cursor).toBeNull();
	expect(seen.size).toBe(listed);
	expect(listed).toBe(pages * 100);
	return rowsRead;
}

// A page once re-read every page before it (docs/scaling.md): walking a list was quadratic.
describe("a deep page reads about one page of rows", () => {
	const count = 1000;
	const limit = 100;

	it.each([
		["every event", "/v1/events?limit=100"],
		["one address's events", "/v1/events?email=deep%40example.com&limit=100"],
		["one bulk send's events", "/v1/events?bulkId=bulk-deep&limit=100"],
	])("%s", async (_, path) => {
		await resetDatabase();
		for (let i = 0; i < count; i += 100) {
			const events = Array.from({ length: 100 }, (_, j) => ({
				event: "delivered",
				email: "deep@example.com",
				bulkId: "bulk-deep",
				// Every ten events share a second, so the cursor's tie-break is exercised.
				timestamp: 1_767_225_600 + Math.floor((i + j) / 10),
				messageId: `<m${i + j}@example.com>`,
			}));
			expect((await postCallback(events)).status).toBe(200);
		}
		const rowsRead = await lastPageRowsRead(path, count / limit, "events");
		expect(rowsRead).toBeGreaterThan(0);
		expect(rowsRead).toBeLessThan(3 * limit);
	});

	it("refused callbacks", async () => {
		await resetDatabase();
		for (let i = 0; i < count; i++) {
			expect((await postCallback(`{"event": ${i}`)).status).toBe(400);
		}
		const rowsRead = await lastPageRowsRead("/v1/rejected?limit=100", count / limit, "rejected");
		expect(rowsRead).toBeGreaterThan(0);
		expect(rowsRead).toBeLessThan(3 * limit);
	});
});

/**
 * An env whose D1 runs `before` just ahead of the `n`th statement it runs on its own (counting
 * from 0), as a callback that commits between a page's two reads would.
 */
function envWithWriteBefore(n: number, before: () => Promise<unknown>): Env {
	let statements = 0;
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") {
				return (query: string) => {
					const statement = target.prepare(query);
					if (statements++ !== n) return statement;
					return {
						bind: (...values: unknown[]) => ({
							all: async () => {
								await before();
								return statement.bind(...values).all();
							},
						}),
					};
				};
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, DB: db };
}

describe("a page stored into between its two reads", () => {
	it("holds at most `limit` events, and the walk sees each event once", async () => {
		await resetDatabase();
		const event = (timestamp: number) => ({ event: "open", email: "late@example.com", timestamp });
		expect((await postCallback([100, 200, 300].map(event))).status).toBe(200);
		// A late event, older than the newest but newer than the page's last, arrives between the
		// page's sizing and its read.
		const racing = envWithWriteBefore(1, () => postCallback(event(250)));
		const walk = async (testEnv: Env, cursor: string | null) => {
			const query = cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`;
			const response = await call(
				`/v1/events?email=late%40example.com&limit=2${query}`,
				{ headers: { authorization: `Bearer ${tokens.lookup}` } },
				testEnv,
			);
			expect(response.status).toBe(200);
			return (await response.json()) as {
				events: Array<{ occurredAt: string }>;
				cursor: string | null;
			};
		};
		const seconds = (page: { events: Array<{ occurredAt: string }> }) =>
			page.events.map((row) => Date.parse(row.occurredAt) / 1000);
		let page = await walk(racing, null);
		const sizes = [page.events.length];
		const seen = seconds(page);
		while (page.cursor !== null) {
			page = await walk(env, page.cursor);
			sizes.push(page.events.length);
			seen.push(...seconds(page));
		}
		expect({ sizes }).toEqual({ sizes: [2, 2] });
		expect(seen).toEqual([300, 250, 200, 100]);
	});

	it("holds at most `limit` refused callbacks, and the walk sees each once", async () => {
		await resetDatabase();
		const error = new ApiError(400, "invalid_json", "x");
		// Records of one second, told apart by id: a newer record of that second may sort among them.
		const at = Math.floor(Date.now() / 1000);
		const record = (id: string) =>
			env.DB.prepare(
				`INSERT INTO rejected_callbacks (id, received_at, status, code, message, body, body_bytes)
				VALUES (?, ?, 400, ?, 'x', x'00', 1)`,
			)
				.bind(id, at, error.code)
				.run();
		for (const id of ["a", "c", "e"]) await record(id);
		const racing = envWithWriteBefore(1, () => record("d"));
		let page = await listRejected(racing.DB, 2);
		const sizes = [page.rows.length];
		const seen = page.rows.map((row) => row.id);
		while (page.next) {
			page = await listRejected(env.DB, 2, page.next);
			sizes.push(page.rows.length);
			seen.push(...page.rows.map((row) => row.id));
		}
		expect({ sizes }).toEqual({ sizes: [2, 2] });
		expect(seen).toEqual(["e", "d", "c", "a"]);
	});
});
