import { beforeAll, describe, expect, it } from "vitest";
import { getJson, postCallback, resetDatabase, tokens } from "../helpers";

type Page = { events: Array<Record<string, unknown>>; cursor: string | null };
type ErrorBody = {
	error: { code: string; message: string; issues?: Array<Record<string, unknown>> };
};

async function page(query: string, token: string = tokens.lookup): Promise<Page> {
	const response = await getJson(`/v1/events${query}`, token);
	expect(response.status).toBe(200);
	return (await response.json()) as Page;
}

const day = 86_400;
const t0 = 1_767_225_600; // 2026-01-01T00:00:00Z

beforeAll(async () => {
	await resetDatabase();
	const events = [
		{
			event: "delivered",
			email: "a@example.com",
			bulkId: "bulk-1",
			timestamp: t0,
			fromDomain: "news.example.com",
		},
		{
			event: "open",
			email: "a@example.com",
			bulkId: "bulk-1",
			timestamp: t0 + day,
			fromDomain: "news.example.com",
		},
		{
			event: "bounce",
			email: "B@example.com",
			bulkId: "bulk-2",
			timestamp: t0 + 2 * day,
			bounceType: "hard_bounce",
			fromDomain: "mail.example.com",
		},
		{
			event: "delivered",
			email: "c@example.com",
			bulkId: "bulk-3",
			timestamp: t0 + 2 * day,
			messageId: "<m3@example.com>",
			fromDomain: "mail.example.com",
		},
		{
			event: "click",
			email: "a@example.com",
			bulkId: "bulk-1",
			timestamp: t0 + 3 * day,
			link: "https://example.com",
		},
	];
	expect((await postCallback(events)).status).toBe(200);
});

describe("GET /v1/events", () => {
	it("lists newest first; equal times newest stored first", async () => {
		const { events, cursor } = await page("");
		expect(events.map((event) => [event.event, event.email])).toEqual([
			["click", "a@example.com"],
			["delivered", "c@example.com"],
			["bounce", "b@example.com"],
			["open", "a@example.com"],
			["delivered", "a@example.com"],
		]);
		expect(cursor).toBeNull();
	});

	it.each([
		["?email=A%40Example.com", 3],
		["?email=b%40example.com", 1],
		["?bulkId=bulk-1", 3],
		["?bulkId=%20bulk-1%20", 3],
		["?messageId=%3Cm3%40example.com%3E", 1],
		["?event=delivered", 2],
		["?fromDomain=MAIL.example.com", 2],
		[`?since=${t0 + day}`, 4],
		["?since=2026-01-02T00:00:00Z&until=2026-01-03", 1],
		[`?until=${t0 + day}`, 1],
		// A fraction of a second rounds up: the open at exactly t0 + day is before both bounds.
		["?since=2026-01-02T00:00:00.500Z", 3],
		["?until=2026-01-02T00:00:00.500Z", 2],
		["?since=2026-01-02T00:00:00.0001Z", 3],
		["?until=2026-01-02T00:00:00.0001Z", 2],
		["?email=a%40example.com&event=open", 1],
		["?email=nobody%40example.com", 0],
		// Leading zeros are a page size too, and an empty parameter (a stray `&`) is none.
		["?limit=0001", 1],
		["?&limit=1&", 1],
	])("filters %s", async (query, count) => {
		expect((await page(query)).events).toHaveLength(count);
	});

	it("pages with an opaque cursor until null, visiting each event once", async () => {
		const seen: unknown[] = [];
		let query = "?limit=2";
		for (let i = 0; i < 5; i++) {
			const result = await page(query);
			seen.push(...result.events.map((event) => event.id));
			if (result.cursor === null) break;
			query = `?limit=2&cursor=${encodeURIComponent(result.cursor)}`;
		}
		expect(seen).toHaveLength(5);
		expect(new Set(seen).size).toBe(5);
		expect(seen).toEqual((await page("")).events.map((event) => event.id));
	});

	it("keeps filters across pages", async () => {
		const first = await page("?email=a%40example.com&limit=2");
		expect(first.events).toHaveLength(2);
		const second = await page(`?email=a%40example.com&limit=2&cursor=${first.cursor}`);
		expect(second.events.map((event) => event.event)).toEqual(["delivered"]);
		expect(second.cursor).toBeNull();
	});

	it("admin tokens may read too", async () => {
		expect((await page("", tokens.admin)).events).toHaveLength(5);
	});

	it.each([
		["no token", null, 401],
		["a wrong token", "not-a-valid-token-at-all", 401],
		["the callback token", tokens.callback, 401],
	])("refuses %s", async (_name, token, status) => {
		const response = await getJson("/v1/events", token);
		expect(response.status).toBe(status);
		expect(response.headers.get("www-authenticate")).toBe("Bearer");
		expect(((await response.json()) as ErrorBody).error.code).toBe("unauthorized");
	});

	it.each([
		["?limit=0", "limit"],
		["?limit=1001", "limit"],
		["?limit=ten", "limit"],
		["?since=yesterday", "since"],
		["?until=2026-13-45T99:00:00Z", "until"],
		// Its fraction rounds it up past the last second of year 9999.
		["?since=9999-12-31T23:59:59.5Z", "since"],
		["?event=bogus", "event"],
		["?email=not-an-address", "email"],
		["?cursor=garbage", "cursor"],
		["?cursor=WzEsMiwzXQ", "cursor"],
		["?emial=a%40example.com", "emial"],
		["?email=a%40example.com&email=b%40example.com", "email"],
	])("answers 400 invalid_query for %s", async (query, path) => {
		const response = await getJson(`/v1/events${query}`);
		expect(response.status).toBe(400);
		const body = (await response.json()) as ErrorBody;
		expect(body.error.code).toBe("invalid_query");
		expect(body.error.issues?.map((issue) => issue.path)).toEqual([path]);
	});

	it("says how to send a plus tag when a query's + arrived as a space", async () => {
		const response = await getJson("/v1/events?email=a+news@example.com");
		expect(response.status).toBe(400);
		const body = (await response.json()) as ErrorBody;
		expect(body.error.issues?.[0]?.message).toContain("send a plus tag as %2B");
		const encoded = await getJson("/v1/events?email=a%2Bnews%40example.com");
		expect(encoded.status).toBe(200);
	});

	it("says how to send an offset's + when a time's + arrived as a space", async () => {
		const response = await getJson("/v1/events?since=2026-01-02T08:00:00+08:00");
		expect(response.status).toBe(400);
		const body = (await response.json()) as ErrorBody;
		expect(body.error.issues).toEqual([
			{ path: "since", message: expect.stringContaining("send the + of an offset as %2B") },
		]);
		const encoded = await getJson("/v1/events?since=2026-01-02T08:00:00%2B08:00");
		expect(encoded.status).toBe(200);
	});
});
