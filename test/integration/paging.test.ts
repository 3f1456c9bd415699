import { describe, expect, it } from "vitest";
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
