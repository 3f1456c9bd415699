import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, countingD1, postCallback, resetDatabase, tokens } from "../helpers";

async function rowsReadOf(path: string): Promise<{ rowsRead: number; body: unknown }> {
	const counting = countingD1();
	const response = await call(
		path,
		{ headers: { authorization: `Bearer ${tokens.lookup}` } },
		counting.env,
	);
	expect(response.status).toBe(200);
	return { rowsRead: counting.counts.rowsRead, body: await response.json() };
}

// SQLite preferred the bulk-send index, whose order fits the page's, over the address's or the
// message's: one address's events in a bulk send read the whole send (docs/scaling.md).
describe("events of an address or a message within a bulk send", () => {
	const size = 2000;

	it.each([
		["email and bulkId", "/v1/events?email=target%40example.com&bulkId=bulk-big&limit=100"],
		[
			"bulkId and messageId",
			"/v1/events?bulkId=bulk-big&messageId=%3Ctarget%40example.com%3E&limit=100",
		],
	])("%s read about the rows they answer", async (_, path) => {
		await resetDatabase();
		for (let i = 0; i < size; i += 100) {
			const events = Array.from({ length: 100 }, (_, j) => ({
				event: "delivered",
				email: i + j === 500 ? "target@example.com" : `r${i + j}@example.com`,
				bulkId: "bulk-big",
				timestamp: 1_767_225_600 + i + j,
				messageId: i + j === 500 ? "<target@example.com>" : `<m${i + j}@example.com>`,
			}));
			expect((await postCallback(events)).status).toBe(200);
		}
		const { rowsRead, body } = await rowsReadOf(path);
		expect((body as { events: unknown[] }).events).toHaveLength(1);
		expect(rowsRead).toBeLessThan(20);
	});
});

// The rollups are keyed by day first, so one sender domain's counts read every domain's rows of
// the range (docs/scaling.md).
describe("stats of one sender domain", () => {
	it("read that domain's rollups, not every domain's", async () => {
		await resetDatabase();
		const days = 100;
		const domains = 50;
		const today = Math.floor(Date.now() / 86_400_000);
		const rows = [];
		for (let d = 0; d < domains; d++) {
			for (let day = today - days; day < today; day++) {
				rows.push([day, `d${d}.example.com`, "delivered", "", 3]);
			}
		}
		for (let i = 0; i < rows.length; i += 500) {
			await env.DB.prepare(
				`INSERT INTO daily_stats (day, from_domain, event, bounce_type, count)
				SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?1)`,
			)
				.bind(JSON.stringify(rows.slice(i, i + 500)))
				.run();
		}
		const since = (today - days) * 86_400;
		const { rowsRead, body } = await rowsReadOf(
			`/v1/stats?fromDomain=d7.example.com&since=${since}&until=${today * 86_400}`,
		);
		const { days: answered } = body as { days: Array<{ counts: { delivered: number } }> };
		expect(answered.reduce((sum, day) => sum + day.counts.delivered, 0)).toBe(3 * days);
		expect(rowsRead).toBeLessThan(4 * days);
	});
});
