import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
	call,
	countingD1,
	countRows,
	docSamples,
	getJson,
	postCallback,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

type Stats = {
	since: string;
	until: string;
	fromDomain: string | null;
	days: Array<{ day: string; counts: Record<string, number> }>;
	totals: Record<string, number>;
	bounceRate: number | null;
	complaintRate: number | null;
};

async function stats(query: string): Promise<Stats> {
	const response = await getJson(`/v1/stats${query}`);
	expect(response.status).toBe(200);
	return (await response.json()) as Stats;
}

const DAY = 86_400;
const d0 = 1_767_225_600; // 2026-01-01T00:00:00Z
const ev = (event: string, day: number, extra: Record<string, unknown> = {}) => ({
	event,
	email: `${event}-${day}-${Math.random().toString(36).slice(2)}@example.com`,
	timestamp: d0 + day * DAY + 3600,
	fromDomain: "news.example.com",
	...extra,
});

async function rollupTotal(): Promise<number> {
	const row = await env.DB.prepare("SELECT coalesce(sum(count), 0) AS n FROM daily_stats").first<{
		n: number;
	}>();
	return row?.n ?? 0;
}

beforeEach(resetDatabase);
afterEach(() => vi.restoreAllMocks());

describe("GET /v1/stats", () => {
	it("counts Tencent's doc samples by day and type", async () => {
		for (const sample of docSamples) expect((await postCallback(sample)).status).toBe(200);
		const result = await stats("?since=2020-01-01&until=2023-01-01");
		expect(result.days).toEqual([
			{ day: "2020-04-27", counts: expect.objectContaining({ delivered: 3, bounce: 0 }) },
			{
				day: "2022-06-01",
				counts: expect.objectContaining({ delivered: 0, bounce: 3, hardBounce: 3, softBounce: 0 }),
			},
		]);
		expect(result.totals).toMatchObject({ delivered: 3, bounce: 3, hardBounce: 3, spamreport: 0 });
		expect(result.bounceRate).toBe(0.5);
		expect(result.complaintRate).toBe(0);
	});

	it("gives both rates on known data, per sender domain", async () => {
		const events = [
			...Array.from({ length: 90 }, (_, i) => ev("delivered", i % 3)),
			...Array.from({ length: 6 }, () => ev("bounce", 1, { bounceType: "hard_bounce" })),
			...Array.from({ length: 4 }, () => ev("bounce", 2, { bounceType: "soft_bounce" })),
			...Array.from({ length: 9 }, () => ev("spamreport", 2)),
			...Array.from({ length: 5 }, () => ev("open", 0, { fromDomain: "shop.example.com" })),
		];
		expect((await postCallback(events.slice(0, 100))).status).toBe(200);
		expect((await postCallback(events.slice(100))).status).toBe(200);
		const result = await stats("?since=2026-01-01&until=2026-01-04&fromDomain=news.example.com");
		expect(result.fromDomain).toBe("news.example.com");
		expect(result.totals).toMatchObject({
			delivered: 90,
			bounce: 10,
			hardBounce: 6,
			softBounce: 4,
			spamreport: 9,
			open: 0,
		});
		expect(result.bounceRate).toBe(0.1); // 10 / (90 + 10)
		expect(result.complaintRate).toBe(0.1); // 9 / 90
		expect(result.days.map((day) => day.day)).toEqual(["2026-01-01", "2026-01-02", "2026-01-03"]);
		expect((await stats("?since=2026-01-01&until=2026-01-04")).totals.open).toBe(5);
		expect(
			(await stats("?since=2026-01-01&until=2026-01-04&fromDomain=shop.example.com")).totals,
		).toMatchObject({ open: 5, delivered: 0 });
	});

	it("counts no event of the day that starts at until, counted by the cron or not", async () => {
		await postCallback([ev("open", 0), ev("open", 1)]);
		const range = "?since=2026-01-01&until=2026-01-02";
		expect((await stats(range)).totals.open).toBe(1);
		await runCron();
		expect((await stats(range)).totals.open).toBe(1);
	});

	it("keeps hard and soft bounces of the same day apart, a bounce without a type soft", async () => {
		await postCallback([
			ev("bounce", 0, { bounceType: "hard_bounce" }),
			ev("bounce", 0, { bounceType: "soft_bounce" }),
			ev("bounce", 0, { bounceType: "soft_bounce" }),
			ev("bounce", 0),
		]);
		const expected = { bounce: 4, hardBounce: 1, softBounce: 3 };
		const range = "?since=2026-01-01&until=2026-01-02";
		for (const counted of [false, true]) {
			if (counted) await runCron();
			const result = await stats(range);
			expect(result.totals).toMatchObject(expected);
			expect(result.days).toEqual([
				{ day: "2026-01-01", counts: expect.objectContaining(expected) },
			]);
		}
	});

	it("covers the 30 days before now by default, whole UTC days", async () => {
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(Date.parse("2026-01-31T12:00:00Z"));
			expect(await stats("")).toMatchObject({
				since: "2026-01-01T00:00:00Z",
				until: "2026-02-01T00:00:00Z",
			});
		} finally {
			vi.useRealTimers();
		}
	});

	it("starts the default range at 1970-01-01 at the earliest, a since it accepts back", async () => {
		await postCallback([ev("open", 0, { timestamp: 0 })]);
		const result = await stats("?until=1000");
		expect(result).toMatchObject({ since: "1970-01-01T00:00:00Z", until: "1970-01-02T00:00:00Z" });
		expect(result.totals.open).toBe(1);
		expect(await stats(`?since=${result.since}&until=${result.until}`)).toEqual(result);
	});

	it("takes a default range ending in 1970's first second, which still holds that second", async () => {
		const result = await stats("?until=1");
		expect(result).toMatchObject({ since: "1970-01-01T00:00:00Z", until: "1970-01-02T00:00:00Z" });
	});

	it("defaults since to 30 days before until: a midnight until covers 30 whole days", async () => {
		const result = await stats("?until=2026-01-31T00:00:00Z");
		expect(result).toMatchObject({ since: "2026-01-01T00:00:00Z", until: "2026-01-31T00:00:00Z" });
	});

	it("covers every UTC day the range overlaps, from its midnight", async () => {
		await postCallback([ev("open", 0)]); // 01:00 on 2026-01-01
		const result = await stats("?since=2026-01-01T12:00:00Z&until=2026-01-01T13:00:00Z");
		expect(result).toMatchObject({ since: "2026-01-01T00:00:00Z", until: "2026-01-02T00:00:00Z" });
		expect(result.totals.open).toBe(1);
	});

	it("accepts a range of exactly 3660 days and refuses one of 3661", async () => {
		const since = 946_684_800; // 2000-01-01T00:00:00Z
		expect(await stats(`?since=${since}&until=${since + 3660 * DAY}`)).toMatchObject({
			since: "2000-01-01T00:00:00Z",
		});
		const response = await getJson(`/v1/stats?since=${since}&until=${since + 3661 * DAY}`);
		expect(response.status).toBe(400);
	});

	it("rounds both rates to six decimals", async () => {
		await postCallback([
			...Array.from({ length: 3 }, () => ev("delivered", 0)),
			...Array.from({ length: 6 }, () => ev("bounce", 0, { bounceType: "hard_bounce" })),
			...Array.from({ length: 2 }, () => ev("spamreport", 0)),
		]);
		const result = await stats("?since=2026-01-01&until=2026-01-02");
		expect(result.bounceRate).toBe(0.666667); // 6 / 9
		expect(result.complaintRate).toBe(0.666667); // 2 / 3
	});

	it("has null rates while there is nothing to divide by", async () => {
		const result = await stats("?since=2026-01-01&until=2026-01-02");
		expect(result).toMatchObject({ days: [], bounceRate: null, complaintRate: null });
	});

	it("counts each stored event once, before and after the cron adds it to the rollups", async () => {
		const total = async () => {
			const { totals } = await stats("?since=2026-01-01&until=2026-01-10");
			return (totals.delivered ?? 0) + (totals.open ?? 0);
		};
		const events = Array.from({ length: 20 }, (_, i) => ev(i % 2 ? "open" : "delivered", i % 4));
		await postCallback(events);
		await postCallback(events.slice(0, 10));
		await postCallback([...events.slice(5, 15), ...events.slice(5, 15)]);
		expect(await countRows("events")).toBe(20);
		// Not yet in the rollups: counted from the events at read time.
		expect(await rollupTotal()).toBe(0);
		expect(await total()).toBe(20);
		await runCron();
		expect(await rollupTotal()).toBe(20);
		expect(await total()).toBe(20);
		await postCallback([ev("open", 1), ev("delivered", 2)]);
		expect(await total()).toBe(22);
		await runCron();
		await runCron();
		expect(await rollupTotal()).toBe(22);
		expect(await total()).toBe(22);
	});

	it("erasing an address keeps its events in the stats, counted or not yet", async () => {
		const gone = { email: "gone@example.com" };
		await postCallback([ev("delivered", 0, gone), ev("open", 0)]);
		await runCron();
		await postCallback([ev("delivered", 1, gone), ev("open", 1)]);
		const before = await stats("?since=2026-01-01&until=2026-01-10");
		const response = await call("/v1/addresses/gone%40example.com", {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(response.status).toBe(200);
		expect(await countRows("events")).toBe(2);
		expect(await stats("?since=2026-01-01&until=2026-01-10")).toEqual(before);
		await runCron();
		expect(await stats("?since=2026-01-01&until=2026-01-10")).toEqual(before);
		expect(before.totals).toMatchObject({ delivered: 2, open: 2 });
	});

	it("erasing an address counts all its events not yet counted before deleting them", async () => {
		const gone = { email: "gone@example.com" };
		await postCallback([
			ev("open", 0),
			ev("delivered", 0, gone),
			ev("open", 0, gone),
			ev("click", 0, gone),
		]);
		const before = await stats("?since=2026-01-01&until=2026-01-10");
		const response = await call("/v1/addresses/gone%40example.com", {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(response.status).toBe(200);
		expect(await countRows("events")).toBe(1);
		expect(await stats("?since=2026-01-01&until=2026-01-10")).toEqual(before);
		expect(before.totals).toMatchObject({ delivered: 1, open: 2, click: 1 });
	});

	it("erasing an address reads its own events, not all those the cron has yet to count", async () => {
		// The cron stopped a while ago: 20,000 events of other addresses wait for it.
		await env.DB.prepare(
			`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
			INSERT INTO events (id, event, email, occurred_at, received_at)
			SELECT printf('%032x', i), 'delivered', 'other' || i || '@example.com', ?1, ?1 FROM c`,
		)
			.bind(d0 + 3600)
			.run();
		const gone = { email: "gone@example.com" };
		await postCallback([ev("delivered", 0, gone), ev("open", 0, gone)]);
		const range = "?since=2026-01-01&until=2026-01-10";
		const before = await stats(range);
		expect(before.totals).toMatchObject({ delivered: 20_001, open: 1 });
		const counting = countingD1();
		const response = await call(
			"/v1/addresses/gone%40example.com",
			{ method: "DELETE", headers: { authorization: `Bearer ${tokens.admin}` } },
			counting.env,
		);
		expect(await response.json()).toMatchObject({ eventsDeleted: 2 });
		expect(counting.counts.rowsRead).toBeLessThan(100);
		expect(await stats(range)).toEqual(before);
		await runCron();
		expect(await stats(range)).toEqual(before);
		expect(await rollupTotal()).toBe(20_002);
	});

	it("events stored after the newest ones were erased are counted too", async () => {
		// A new row takes max(seq) + 1, so erasing the newest rows makes seq values come back.
		await postCallback([ev("open", 0), ev("delivered", 0, { email: "last@example.com" })]);
		await runCron();
		await call("/v1/addresses/last%40example.com", {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		await postCallback([ev("click", 0), ev("click", 0)]);
		const expected = { open: 1, delivered: 1, click: 2 };
		expect((await stats("?since=2026-01-01&until=2026-01-10")).totals).toMatchObject(expected);
		await runCron();
		expect((await stats("?since=2026-01-01&until=2026-01-10")).totals).toMatchObject(expected);
		expect(await rollupTotal()).toBe(4);
	});

	it.each([
		["?since=soon", "since"],
		["?since=2026-02-01&until=2026-01-01", "until"],
		["?since=2026-01-01T12:00:00Z&until=2026-01-01T11:00:00Z", "until"],
		["?since=2026-01-01T12:00:00Z&until=2026-01-01T12:00:00Z", "until"],
		["?since=253402300800&until=253402473600", "since"],
		["?since=9999-12-01&until=9999-12-31T00:00:01Z", "until"],
		// Without until the range ends now: a since after it, or too long before it, is at fault.
		["?since=2999-01-01", "since"],
		["?since=2000-01-01", "since"],
		["?fromDomain=a%20b", "fromDomain"],
		["?days=7", "days"],
	])("refuses %s", async (query, path) => {
		const response = await getJson(`/v1/stats${query}`);
		expect(response.status).toBe(400);
		const body = (await response.json()) as {
			error: { code: string; issues: Array<{ path: string }> };
		};
		expect(body.error.code).toBe("invalid_query");
		expect(body.error.issues[0]?.path).toBe(path);
	});
});

describe("retention", () => {
	const later = (days: number) => Date.now() + days * DAY * 1000;

	/** Collects the cron's "retention" log lines. */
	function captureRetentionLogs(): Array<Record<string, unknown>> {
		const logged: Array<Record<string, unknown>> = [];
		vi.spyOn(console, "log").mockImplementation((line: string) => {
			const entry = JSON.parse(line) as Record<string, unknown>;
			if (entry.message === "retention") logged.push(entry);
		});
		return logged;
	}

	it("deletes old events in bounded batches over several runs; rollups, entries and history stay", async () => {
		const events = Array.from({ length: 45 }, (_, i) => ev("delivered", i % 5));
		events.push(ev("bounce", 1, { bounceType: "hard_bounce", email: "kept@example.com" }));
		await postCallback(events);
		const small = { ...env, RETENTION_BATCH_SIZE: "2" };
		const logged: Array<Record<string, unknown>> = [];
		vi.spyOn(console, "log").mockImplementation((line: string) => {
			const entry = JSON.parse(line) as Record<string, unknown>;
			if (entry.message === "retention") logged.push(entry);
		});
		for (let run = 0; run < 5 && logged.at(-1)?.done !== true; run++)
			await runCron(later(91), small);
		expect(logged.map((entry) => [entry.deleted, entry.done])).toEqual([
			[20, false],
			[20, false],
			[6, true],
		]);
		expect(await countRows("events")).toBe(0);
		expect(await rollupTotal()).toBe(46);
		expect(await countRows("suppressions")).toBe(1);
		expect(await countRows("suppression_history")).toBe(1);
	});

	it("events stored after retention emptied the table are counted too", async () => {
		await postCallback([ev("open", 0), ev("click", 0)]);
		await runCron(later(91));
		expect(await countRows("events")).toBe(0);
		await postCallback([ev("delivered", 3)]);
		const { totals } = await stats("?since=2026-01-01&until=2026-01-10");
		expect(totals).toMatchObject({ open: 1, click: 1, delivered: 1 });
		await runCron();
		expect(await rollupTotal()).toBe(3);
	});

	it("never deletes an event the rollups do not count yet", async () => {
		await postCallback([ev("open", 0), ev("click", 0)]);
		// As if the cron's counting had fallen behind: the mark is below the stored events.
		await env.DB.prepare(
			"INSERT OR REPLACE INTO cron_state (name, value) VALUES ('rollup', '0')",
		).run();
		const { deleteEventsBefore } = await import("../../src/events/retention-store");
		expect(await deleteEventsBefore(env.DB, Math.floor(later(91) / 1000), 100)).toBe(0);
		expect(await countRows("events")).toBe(2);
	});

	it("reads only the oldest rows, not the whole table, when little is old", async () => {
		await postCallback(Array.from({ length: 40 }, (_, i) => ev("delivered", i % 5)));
		await runCron();
		const read: number[] = [];
		const db = new Proxy(env.DB, {
			get(target, property) {
				if (property === "batch") {
					return async (statements: D1PreparedStatement[]) => {
						const results = await target.batch(statements);
						read.push(results[0]?.meta.rows_read ?? 0);
						return results;
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const { deleteEventsBefore } = await import("../../src/events/retention-store");
		expect(await deleteEventsBefore(db, Math.floor(Date.now() / 1000) - 86_400, 5)).toBe(0);
		expect(read).toHaveLength(1);
		expect(read[0]).toBeLessThan(10);
		expect(await deleteEventsBefore(db, Math.floor(later(91) / 1000), 5)).toBe(5);
		expect(await countRows("events")).toBe(35);
	});

	it("keeps events younger than EVENT_RETENTION_DAYS", async () => {
		await postCallback([ev("open", 0), ev("click", 0)]);
		await runCron(later(89));
		expect(await countRows("events")).toBe(2);
		await runCron(later(91));
		expect(await countRows("events")).toBe(0);
	});

	it("counts each deleted rejected callback once, at most the batch size", async () => {
		const { deleteRejectedBefore } = await import("../../src/events/retention-store");
		for (const body of ["{", "[", "nul"]) await postCallback(body);
		const cutoff = Math.floor(later(31) / 1000);
		expect(await deleteRejectedBefore(env.DB, cutoff, 2)).toBe(2);
		expect(await deleteRejectedBefore(env.DB, cutoff, 2)).toBe(1);
		expect(await countRows("rejected_callbacks")).toBe(0);
	});

	it("keeps an event exactly EVENT_RETENTION_DAYS old and deletes it a second later", async () => {
		await postCallback([ev("open", 0)]);
		const row = await env.DB.prepare("SELECT received_at AS at FROM events").first<{
			at: number;
		}>();
		const edge = ((row?.at ?? 0) + 90 * DAY) * 1000;
		await runCron(edge);
		expect(await countRows("events")).toBe(1);
		await runCron(edge + 1000);
		expect(await countRows("events")).toBe(0);
	});

	it("keeps a rejected callback exactly 30 days old and deletes it a second later", async () => {
		await postCallback("{ not json");
		const row = await env.DB.prepare("SELECT received_at AS at FROM rejected_callbacks").first<{
			at: number;
		}>();
		const edge = ((row?.at ?? 0) + 30 * DAY) * 1000;
		await runCron(edge);
		expect(await countRows("rejected_callbacks")).toBe(1);
		await runCron(edge + 1000);
		expect(await countRows("rejected_callbacks")).toBe(0);
	});

	it("deletes the oldest events and rejected callbacks first when more are old than one batch", async () => {
		const t0 = Date.now();
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(t0);
			await postCallback([ev("open", 0), ev("click", 0)]);
			await postCallback("{");
			vi.setSystemTime(t0 + 10 * DAY * 1000);
			await postCallback("[");
			vi.setSystemTime(t0 + 60 * DAY * 1000);
			await postCallback([ev("delivered", 1), ev("delivered", 2)]);
		} finally {
			vi.useRealTimers();
		}
		await runCron(t0 + 41 * DAY * 1000, { ...env, RETENTION_BATCH_SIZE: "1" });
		const { results: rejected } = await env.DB.prepare(
			"SELECT received_at AS at FROM rejected_callbacks",
		).all();
		expect(rejected).toEqual([{ at: Math.floor(t0 / 1000) + 10 * DAY }]);
		await runCron(t0 + 91 * DAY * 1000, { ...env, RETENTION_BATCH_SIZE: "2" });
		const { results: events } = await env.DB.prepare("SELECT event FROM events").all();
		expect(events).toEqual([{ event: "delivered" }, { event: "delivered" }]);
	});

	it("is not done while a full batch of rejected callbacks was deleted", async () => {
		for (const body of ["{", "["]) await postCallback(body);
		const logged = captureRetentionLogs();
		const small = { ...env, RETENTION_BATCH_SIZE: "2" };
		await runCron(later(31), small);
		await runCron(later(31), small);
		expect(logged.map((entry) => [entry.rejectedDeleted, entry.done])).toEqual([
			[2, false],
			[0, true],
		]);
	});

	it("counts a backlog larger than one run's share over several runs, not done until counted", async () => {
		await postCallback([ev("open", 0)]);
		// One stored event 2,000,000 seqs above the mark: a run counts 10 batches of 50,000 seqs.
		await env.DB.prepare("UPDATE events SET seq = 2000000").run();
		const logged = captureRetentionLogs();
		for (let run = 0; run < 4; run++) await runCron(later(91));
		expect(logged.map((entry) => [entry.countedTo, entry.deleted, entry.done])).toEqual([
			[500_000, 0, false],
			[1_000_000, 0, false],
			[1_500_000, 0, false],
			[2_000_000, 1, true],
		]);
		expect(await rollupTotal()).toBe(1);
	});

	it("keeps rejected callbacks 30 days", async () => {
		await postCallback("{ not json");
		await runCron(later(29));
		expect(await countRows("rejected_callbacks")).toBe(1);
		await runCron(later(31));
		expect(await countRows("rejected_callbacks")).toBe(0);
	});
});
