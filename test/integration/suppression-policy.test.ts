import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { eventKey } from "../../src/tencent/raw";
import {
	call,
	countingD1,
	countingKv,
	countRows,
	daysAgo,
	docSamples,
	entriesOf,
	envWithBatch,
	envWithNthBatchFailing,
	lookup,
	postCallback,
	putSuppression,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

type Event = Record<string, unknown>;
const DAY = 86_400;
const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace(".000", "");

const hard = (email: string, at: number, reason = "550 5.1.1 no such user"): Event => ({
	event: "bounce",
	bounceType: "hard_bounce",
	email,
	timestamp: at,
	reason,
});
const soft = (email: string, at: number, reason = "452 4.2.2 mailbox full"): Event => ({
	event: "bounce",
	bounceType: "soft_bounce",
	email,
	timestamp: at,
	reason,
});
const delivered = (email: string, at: number): Event => ({
	event: "delivered",
	email,
	timestamp: at,
});

async function post(events: Event | Event[], testEnv: Env = env): Promise<void> {
	const response = await postCallback(events, { env: testEnv });
	expect(response.status).toBe(200);
}

async function remove(email: string, query = ""): Promise<{ email: string; removed: number }> {
	const response = await call(`/v1/suppressions/${encodeURIComponent(email)}${query}`, {
		method: "DELETE",
		headers: { authorization: `Bearer ${tokens.admin}` },
	});
	expect(response.status).toBe(200);
	return (await response.json()) as { email: string; removed: number };
}

beforeEach(resetDatabase);

describe("hard bounces", () => {
	it("the 2022 doc sample makes a bounce entry for every sender that never expires", async () => {
		await post(docSamples[3] as Event);
		expect(await lookup("example@example.com")).toMatchObject({
			suppressed: true,
			entries: [
				{
					list: "bounce",
					scope: "*",
					reason: "551 5.1.1 recipient is not exist",
					source: "event",
					eventCount: 1,
					lastEventAt: "2022-06-01T06:24:43Z",
					bulkId: "qcloudses-30-251200670-date-20220601142439-8jolHvR2XcXC1",
					expiresAt: null,
				},
			],
		});
	});

	it("HARD_BOUNCE_SUPPRESS_DAYS makes it expire that long after the bounce", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" };
		const at = daysAgo(1);
		await post(hard("h@example.com", at), days30);
		expect((await entriesOf("h@example.com"))[0]?.expiresAt).toBe(iso(at + 30 * DAY));
		await post(hard("old@example.com", daysAgo(31)), days30);
		expect(await entriesOf("old@example.com")).toEqual([]);
		// Nothing is written for it: no expired row, no history line, no edge check.
		const written = await env.DB.prepare(
			`SELECT (SELECT count(*) FROM suppressions WHERE email = ?1) AS entries,
				(SELECT count(*) FROM suppression_history WHERE email = ?1) AS history,
				(SELECT count(*) FROM edge_pending WHERE email = ?1) AS pending`,
		)
			.bind("old@example.com")
			.first();
		expect(written).toEqual({ entries: 0, history: 0, pending: 0 });
	});

	it("a hard bounce whose suppression ends in the second it arrives makes no entry", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" };
		const now = Math.floor(Date.now() / 1000);
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(now * 1000);
			await post(hard("ends@example.com", now - 30 * DAY), days30);
			await post(hard("ends-later@example.com", now + 1 - 30 * DAY), days30);
		} finally {
			vi.useRealTimers();
		}
		const rows = await env.DB.prepare("SELECT email FROM suppressions").all();
		expect(rows.results).toEqual([{ email: "ends-later@example.com" }]);
	});

	it("an older bounce whose own suppression is not over brings back an entry that runs out in the second it arrives", async () => {
		const now = Math.floor(Date.now() / 1000) + 10;
		await post(hard("runs-out@example.com", now - 30 * DAY), {
			...env,
			HARD_BOUNCE_SUPPRESS_DAYS: "30",
		});
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(now * 1000);
			// Older, and under a longer setting its own suppression is not over.
			await post(hard("runs-out@example.com", now - 30 * DAY - 10), {
				...env,
				HARD_BOUNCE_SUPPRESS_DAYS: "60",
			});
		} finally {
			vi.useRealTimers();
		}
		const row = await env.DB.prepare(
			"SELECT event_count AS n, expires_at AS expiresAt FROM suppressions",
		).first();
		// A new entry, as once the cron had retired the row: the older bounce's count and expiry.
		expect(row).toEqual({ n: 1, expiresAt: now + 30 * DAY - 10 });
	});

	it("an older bounce under a raised HARD_BOUNCE_SUPPRESS_DAYS brings back a run-out entry, whether or not the cron retired it", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" } as Env;
		const days60 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "60" } as Env;
		const now = Math.floor(Date.now() / 1000);
		// Two addresses bounced 31 days ago under 30 days: their entries ran out a day ago.
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime((now - 2 * DAY) * 1000);
			for (const email of ["retired@example.com", "waiting@example.com"]) {
				await post(hard(email, now - 31 * DAY, "550 latest"), days30);
			}
		} finally {
			vi.useRealTimers();
		}
		// The cron retires one row; the other waits for its next run.
		await env.DB.prepare("DELETE FROM suppressions WHERE email = 'retired@example.com'").run();
		// The setting is raised to 60 days, and an older bounce of each arrives: 28 days to go.
		for (const email of ["retired@example.com", "waiting@example.com"]) {
			await post(hard(email, now - 32 * DAY, "550 older"), days60);
		}
		const expected = [
			{
				list: "bounce",
				scope: "*",
				reason: "550 older",
				source: "event",
				eventCount: 1,
				lastEventAt: iso(now - 32 * DAY),
				bulkId: null,
				expiresAt: iso(now + 28 * DAY),
			},
		];
		expect(await entriesOf("retired@example.com")).toEqual(expected);
		expect(await entriesOf("waiting@example.com")).toEqual(expected);
		// The edge copy says so too, and the history dates the expiry before the entry's return.
		const kv = JSON.parse((await env.SUPPRESSIONS.get("s:waiting@example.com")) ?? "[]");
		expect(kv).toEqual([expect.objectContaining({ expiresAt: iso(now + 28 * DAY) })]);
		const history = await env.DB.prepare(
			"SELECT action, at FROM suppression_history WHERE email = 'waiting@example.com' ORDER BY seq",
		).all<{ action: string; at: number }>();
		expect(history.results.map((line) => line.action)).toEqual(["added", "expired", "added"]);
		expect(history.results[1]?.at).toBe(now - DAY);
	});

	it("older bounces in force, redelivered ones among them, give a run-out entry what they give once the cron retired it", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" } as Env;
		const days60 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "60" } as Env;
		const now = Math.floor(Date.now() / 1000);
		const first = (email: string) => [
			hard(email, now - 40 * DAY, "550 first"),
			hard(email, now - 31 * DAY, "550 latest"),
		];
		const bouncedTwoDaysAgo = async (email: string) => {
			vi.useFakeTimers({ toFake: ["Date"] });
			try {
				vi.setSystemTime((now - 2 * DAY) * 1000);
				await post(first(email), days30);
			} finally {
				vi.useRealTimers();
			}
		};
		// One entry ran out and a real cron run retired it; the other ran out and waits.
		await bouncedTwoDaysAgo("retired@example.com");
		await runCron(Date.now(), days30);
		await bouncedTwoDaysAgo("waiting@example.com");
		const seen = [];
		for (const email of ["retired@example.com", "waiting@example.com"]) {
			// Redelivered bounces (both still in force under 60 days) count no more; two older new
			// ones in one callback make the entry, the later of them giving its details.
			const older = [hard(email, now - 33 * DAY, "550 b"), hard(email, now - 32 * DAY, "550 c")];
			await post([...first(email), ...older], days60);
			await post([...first(email), ...older], days60);
			const { entries } = await lookup(email, "?consistent=true");
			const history = await env.DB.prepare(
				"SELECT action, at, source, note FROM suppression_history WHERE email = ? ORDER BY seq",
			)
				.bind(email)
				.all<{ action: string; at: number; note: string | null }>();
			const kv = JSON.parse((await env.SUPPRESSIONS.get(`s:${email}`)) ?? "null");
			seen.push({ entries, history: history.results, kv });
		}
		expect(seen[0]?.entries).toEqual([
			expect.objectContaining({ reason: "550 c", eventCount: 2, expiresAt: iso(now + 28 * DAY) }),
		]);
		expect(seen[0]?.history.map((line) => [line.action, line.note])).toEqual([
			["added", "550 latest"],
			["expired", null],
			["added", "550 c"],
		]);
		expect(seen[0]?.history[1]?.at).toBe(now - DAY);
		expect(seen[0]?.kv).toEqual(seen[0]?.entries);
		// createdAt and updatedAt are the second of the callback: a second apart at most (in the KV
		// value too, parsed so that they are stripped there as well).
		const strip = (value: unknown) =>
			JSON.stringify(value)
				.replaceAll(/"(createdAt|updatedAt)":"[^"]*"/g, "")
				.replaceAll(/"at":\d+/g, (at) => (at === `"at":${now - DAY}` ? at : ""));
		expect(strip(seen[1])).toBe(strip(seen[0]));
	});

	it("an older bounce that brings back a run-out entry gives it its bulk id and its event id, which breaks a later tie", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" } as Env;
		const days60 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "60" } as Env;
		const now = Math.floor(Date.now() / 1000);
		const email = "bulk@example.com";
		const bounce = (at: number, reason: string) => ({ ...hard(email, at, reason), bulkId: reason });
		// Events whose ids order as the test needs: the run-out entry's latest has the greatest id,
		// and of two older bounces in one second the second one's id is the greater.
		const withIds = async (at: number, prefix: string, count: number) =>
			Promise.all(
				Array.from({ length: count }, async (_, i) => {
					const event = bounce(at, `${prefix} ${i}`);
					return { event, id: await eventKey(event) };
				}),
			);
		const latestCandidates = await withIds(now - 31 * DAY, "550 latest", 40);
		const latest = latestCandidates.reduce((a, b) => (a.id > b.id ? a : b));
		const older = (await withIds(now - 32 * DAY, "550 older", 40))
			.filter((candidate) => candidate.id < latest.id)
			.sort((a, b) => (a.id < b.id ? -1 : 1));
		const first = older[0] as { event: Event };
		const second = older[1] as { event: Event };
		// The entry ran out a day ago and waits for the cron.
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime((now - 2 * DAY) * 1000);
			await post(latest.event, days30);
		} finally {
			vi.useRealTimers();
		}
		// Raised to 60 days: an older bounce brings the entry back, with its own details.
		await post(first.event, days60);
		expect(await entriesOf(email)).toEqual([
			expect.objectContaining({ reason: first.event.reason, bulkId: first.event.bulkId }),
		]);
		// A bounce of the same second with a greater id than that one's is the latest now.
		await post(second.event, days60);
		expect(await entriesOf(email)).toEqual([
			expect.objectContaining({
				reason: second.event.reason,
				bulkId: second.event.bulkId,
				eventCount: 2,
				lastEventAt: iso(now - 32 * DAY),
			}),
		]);
	});

	it("a soft bounce after a delivery leaves an expiring hard-bounce entry alone", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" };
		const t = daysAgo(2);
		await post([delivered("hd@example.com", t), hard("hd@example.com", t + 10)], days30);
		await post(soft("hd@example.com", t + 20), days30);
		// Only the hard entry: no soft row withdrawn on the hard entry's account, no history line.
		const rows = await env.DB.prepare(
			"SELECT origin, expires_at AS expiresAt FROM suppressions WHERE email = ?",
		)
			.bind("hd@example.com")
			.all();
		expect(rows.results).toEqual([{ origin: "event", expiresAt: t + 10 + 30 * DAY }]);
		const history = await env.DB.prepare("SELECT action FROM suppression_history WHERE email = ?")
			.bind("hd@example.com")
			.all();
		expect(history.results).toEqual([{ action: "added" }]);
	});

	it("lowering HARD_BOUNCE_SUPPRESS_DAYS from 0 leaves an entry for ever until the address bounces again", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" } as Env;
		await post(hard("ever@example.com", daysAgo(400)));
		// Cron runs a year apart under the new value retire nothing, and an older bounce, whose own
		// 30 days are over, changes nothing.
		await runCron(Date.now(), days30);
		await runCron(Date.now() + 365 * DAY * 1000, days30);
		await post(hard("ever@example.com", daysAgo(401)), days30);
		expect(await entriesOf("ever@example.com")).toMatchObject([{ eventCount: 1, expiresAt: null }]);
		// A later bounce gives the entry its expiry under the new value.
		const at = daysAgo(1);
		await post(hard("ever@example.com", at), days30);
		expect(await entriesOf("ever@example.com")).toMatchObject([
			{ eventCount: 2, expiresAt: iso(at + 30 * DAY) },
		]);
	});

	it("a run decided again under a new SOFT_BOUNCE_SUPPRESS_DAYS takes its new expiry", async () => {
		const t = daysAgo(2);
		await post([soft("ns@example.com", t + 1), soft("ns@example.com", t + 2)]);
		await post(soft("ns@example.com", t + 3));
		expect((await entriesOf("ns@example.com"))[0]?.expiresAt).toBe(iso(t + 3 + 14 * DAY));
		// A soft bounce from before the window: the run, its count and its last event stay.
		await post(soft("ns@example.com", daysAgo(20)), { ...env, SOFT_BOUNCE_SUPPRESS_DAYS: "30" });
		const [entry] = await entriesOf("ns@example.com");
		expect(entry).toMatchObject({ eventCount: 3, expiresAt: iso(t + 3 + 30 * DAY) });
	});

	it("an expiry past the end of year 9999 stops there, as the API can write it", async () => {
		const last = 253_402_300_799; // 9999-12-31T23:59:59Z, the latest timestamp accepted
		await post(hard("h9999@example.com", last - 60), { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" });
		await post([soft("s9999@example.com", last - 2), soft("s9999@example.com", last - 1)]);
		await post(soft("s9999@example.com", last));
		for (const email of ["h9999@example.com", "s9999@example.com"]) {
			expect((await entriesOf(email))[0]?.expiresAt).toBe("9999-12-31T23:59:59Z");
		}
	});

	it("an older bounce arriving later keeps the latest one's details", async () => {
		const latest = { ...hard("o@example.com", 2000, "550 latest"), bulkId: "bulk-latest" };
		await post(latest);
		await post({ ...hard("o@example.com", 1000, "550 older"), bulkId: "bulk-older" });
		expect(await entriesOf("o@example.com")).toEqual([
			expect.objectContaining({
				eventCount: 2,
				reason: "550 latest",
				bulkId: "bulk-latest",
				lastEventAt: iso(2000),
			}),
		]);
		// The entry still names the latest event: it breaks a tie with evidence of the same second.
		const stored = await env.DB.prepare("SELECT event_id AS eventId FROM suppressions").first();
		expect(stored).toEqual({ eventId: await eventKey(latest) });
	});

	it("of hard bounces in one second, the greatest event id gives the details, in any order", async () => {
		const tied = (email: string) =>
			["550 a", "550 b"].map((reason) => ({ ...hard(email, 1000, reason), bulkId: reason }));
		const arrivals: Array<[string, (pair: Event[]) => Event[][]]> = [
			["together@example.com", (pair) => [pair]],
			["reversed@example.com", (pair) => [[...pair].reverse()]],
			["ab@example.com", (pair) => pair.map((event) => [event])],
			["ba@example.com", (pair) => [...pair].reverse().map((event) => [event])],
		];
		for (const [email, order] of arrivals) {
			const pair = tied(email);
			const ids = await Promise.all(pair.map((event) => eventKey(event)));
			const latest = pair[(ids[0] as string) > (ids[1] as string) ? 0 : 1] as Event;
			for (const callback of order(pair)) await post(callback);
			expect(await entriesOf(email), email).toEqual([
				expect.objectContaining({ eventCount: 2, reason: latest.reason, bulkId: latest.reason }),
			]);
		}
	});

	it("a bounce after the year 5138 (eleven digits of seconds to twelve) is later than one before", async () => {
		await post([
			hard("far@example.com", 100_000_000_000, "550 later"),
			hard("far@example.com", 99_999_999_999, "550 earlier"),
		]);
		expect(await entriesOf("far@example.com")).toEqual([
			expect.objectContaining({ reason: "550 later", lastEventAt: iso(100_000_000_000) }),
		]);
	});

	it("later bounces renew the entry; the latest gives the reason", async () => {
		await post([hard("r@example.com", 2000, "second"), hard("r@example.com", 1000, "first")]);
		await post(hard("r@example.com", 1500, "middle"));
		expect(await entriesOf("r@example.com")).toEqual([
			expect.objectContaining({ eventCount: 3, reason: "second", lastEventAt: iso(2000) }),
		]);
	});
});

describe("soft bounces", () => {
	const t = daysAgo(3);

	it("count up to SOFT_BOUNCE_LIMIT, then suppress until 14 days after the last", async () => {
		await post([soft("s@example.com", t), soft("s@example.com", t + 60)]);
		expect(await entriesOf("s@example.com")).toEqual([]);
		await post(soft("s@example.com", t + 120));
		expect(await entriesOf("s@example.com")).toEqual([
			{
				list: "bounce",
				scope: "*",
				reason: "452 4.2.2 mailbox full",
				source: "event",
				eventCount: 3,
				lastEventAt: iso(t + 120),
				bulkId: null,
				expiresAt: iso(t + 120 + 14 * DAY),
			},
		]);
	});

	it("only within SOFT_BOUNCE_WINDOW_DAYS", async () => {
		// Never three within 14 days: -20 and -10, or -10 and -0.5.
		await post([
			soft("w@example.com", daysAgo(20)),
			soft("w@example.com", daysAgo(10)),
			soft("w@example.com", daysAgo(0.5)),
		]);
		expect(await entriesOf("w@example.com")).toEqual([]);
		await post(soft("w@example.com", daysAgo(0.25)));
		expect((await entriesOf("w@example.com"))[0]?.eventCount).toBe(3);
	});

	it("a delivery between them breaks the run", async () => {
		await post([
			soft("d@example.com", t),
			soft("d@example.com", t + 60),
			delivered("d@example.com", t + 90),
			soft("d@example.com", t + 120),
		]);
		expect(await entriesOf("d@example.com")).toEqual([]);
	});

	it("takes its details from the run's last soft bounce, not another event of that second", async () => {
		const last = soft("same@example.com", t + 2, "452 the last of the run");
		// Any other event of that second, with a greater idempotency key than the bounce's.
		const lastKey = await eventKey(last);
		let other: Event = { event: "open", email: "same@example.com", timestamp: t + 2 };
		for (let i = 0; (await eventKey(other)) < lastKey; i++) other = { ...other, link: `#${i}` };
		await post([soft("same@example.com", t), soft("same@example.com", t + 1), other, last]);
		expect(await entriesOf("same@example.com")).toEqual([
			expect.objectContaining({ eventCount: 3, reason: "452 the last of the run" }),
		]);
	});

	it("a run whose suppression ends in the second its last bounce arrives makes no entry", async () => {
		const now = Math.floor(Date.now() / 1000);
		const last = now - 14 * DAY;
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(now * 1000);
			await post([soft("over@example.com", last - 2), soft("over@example.com", last - 1)]);
			await post(soft("over@example.com", last));
			await post([soft("live@example.com", last - 1), soft("live@example.com", last)]);
			await post(soft("live@example.com", last + 1));
		} finally {
			vi.useRealTimers();
		}
		const rows = await env.DB.prepare("SELECT email FROM suppressions").all();
		expect(rows.results).toEqual([{ email: "live@example.com" }]);
	});

	it("a late delivery leaves an entry that runs out in the second it arrives as it was", async () => {
		const now = Math.floor(Date.now() / 1000) + 10;
		const last = now - 14 * DAY;
		await post([soft("ending@example.com", last - 2), soft("ending@example.com", last - 1)]);
		await post(soft("ending@example.com", last));
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(now * 1000);
			await post([
				delivered("ending@example.com", last - 1),
				soft("ending@example.com", last - DAY),
			]);
		} finally {
			vi.useRealTimers();
		}
		const history = await env.DB.prepare("SELECT action FROM suppression_history").all();
		expect(history.results).toEqual([{ action: "added" }]);
	});

	it("a delivery that arrives late leaves an entry that has already run out as it was", async () => {
		await post([soft("lapsed@example.com", t), soft("lapsed@example.com", t + 60)]);
		await post(soft("lapsed@example.com", t + 120));
		// The entry ran out a minute ago and the cron has not retired it yet.
		const now = Math.floor(Date.now() / 1000);
		await env.DB.prepare("UPDATE suppressions SET expires_at = ?1, updated_at = ?1 - 3600")
			.bind(now - 60)
			.run();
		await env.DB.prepare("DELETE FROM suppression_history WHERE action != 'added'").run();
		// A delivery inside the run, with a soft bounce from long before it, so the run is decided
		// again: there is nothing left to withdraw.
		await post([delivered("lapsed@example.com", t + 90), soft("lapsed@example.com", daysAgo(40))]);
		const row = await env.DB.prepare("SELECT expires_at AS expiresAt FROM suppressions").first();
		expect(row).toEqual({ expiresAt: now - 60 });
		const history = await env.DB.prepare("SELECT action FROM suppression_history").all();
		expect(history.results).toEqual([{ action: "added" }]);
	});

	it("with its run no longer stored, only a delivery at or after a stored bounce of its window withdraws it", async () => {
		await post([soft("gone@example.com", t), soft("gone@example.com", t + 60)]);
		await post(soft("gone@example.com", t + 120));
		// A soft bounce one whole window before the run's end, arriving late, is not part of it.
		await post(soft("gone@example.com", t + 120 - 14 * DAY));
		// The run's first bounces are gone (past retention); the entry stands until it expires.
		await env.DB.prepare("DELETE FROM events WHERE occurred_at IN (?, ?)")
			.bind(t, t + 60)
			.run();
		await post(delivered("gone@example.com", t + 120 - 14 * DAY));
		expect(await entriesOf("gone@example.com")).toHaveLength(1);
		// One in the second of a bounce inside the window (it counts as after it) broke the run.
		await post(soft("gone@example.com", t + 121 - 14 * DAY));
		expect(await entriesOf("gone@example.com")).toHaveLength(1);
		await post(delivered("gone@example.com", t + 121 - 14 * DAY));
		expect(await entriesOf("gone@example.com")).toEqual([]);
	});

	it("a delivery that arrives late withdraws the entry, and the history says so", async () => {
		await post([
			soft("late@example.com", t),
			soft("late@example.com", t + 60),
			soft("late@example.com", t + 120),
		]);
		expect(await entriesOf("late@example.com")).toHaveLength(1);
		await post(delivered("late@example.com", t + 90));
		expect(await lookup("late@example.com")).toEqual({
			email: "late@example.com",
			suppressed: false,
			entries: [],
		});
		const history = await env.DB.prepare(
			"SELECT action, source, note FROM suppression_history WHERE email = ? ORDER BY seq",
		)
			.bind("late@example.com")
			.all();
		expect(history.results).toEqual([
			{ action: "added", source: "event", note: "452 4.2.2 mailbox full" },
			{ action: "removed", source: "event", note: "a delivery broke the run of soft bounces" },
		]);
	});

	it("of soft bounces in the run's last second, the greatest event id gives the details", async () => {
		const reasons = ["452 a", "452 b", "452 c", "452 d", "452 e"];
		await post(reasons.map((reason) => soft("same@example.com", t, reason)));
		const last = await env.DB.prepare(
			"SELECT id, reason FROM events WHERE email = ? ORDER BY id DESC LIMIT 1",
		)
			.bind("same@example.com")
			.first<{ id: string; reason: string }>();
		const stored = await env.DB.prepare(
			"SELECT event_id AS eventId, reason, event_count AS n FROM suppressions WHERE email = ?",
		)
			.bind("same@example.com")
			.first();
		expect(stored).toEqual({ eventId: last?.id, reason: last?.reason, n: 5 });
	});

	it("a late delivery in the same second as the last bounce withdraws the entry", async () => {
		// A delivery in the same second counts as after the bounce: no run ends in that second.
		await post([soft("tie@example.com", t), soft("tie@example.com", t + 60)]);
		await post(soft("tie@example.com", t + 120));
		expect(await entriesOf("tie@example.com")).toHaveLength(1);
		await post(delivered("tie@example.com", t + 120));
		expect(await entriesOf("tie@example.com")).toEqual([]);
		expect(await countRows("soft_bounce_recheck")).toBe(0);
	});

	it("an entry whose bounces are no longer stored stands until it expires", async () => {
		const run = [soft("kept@example.com", t), soft("kept@example.com", t + 60)];
		await post([...run, soft("kept@example.com", t + 120)]);
		const [entry] = await entriesOf("kept@example.com");
		expect(entry?.expiresAt).toBe(iso(t + 120 + 14 * DAY));
		// The address's events erased, its entries kept.
		const erased = await call("/v1/addresses/kept%40example.com", {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(erased.status).toBe(200);
		expect(await countRows("events")).toBe(0);
		// Neither a later delivery nor one more soft bounce lifts it.
		await post(delivered("kept@example.com", t + 200));
		await post(soft("kept@example.com", t + 300));
		expect(await entriesOf("kept@example.com")).toEqual([entry]);
		expect((await lookup("kept@example.com")).suppressed).toBe(true);
		// The same when retention has deleted only the run's first bounce.
		await post([soft("part@example.com", t), soft("part@example.com", t + 60)]);
		await post(soft("part@example.com", t + 120));
		expect((await lookup("part@example.com", "?consistent=true")).suppressed).toBe(true);
		await env.DB.prepare("DELETE FROM events WHERE email = ? AND occurred_at = ?")
			.bind("part@example.com", t)
			.run();
		await post(delivered("part@example.com", t + 200));
		expect((await lookup("part@example.com", "?consistent=true")).suppressed).toBe(true);
	});

	it("with no run left, a late delivery before the run leaves it, whatever bounced at the window's first second", async () => {
		// SOFT_BOUNCE_LIMIT raised after the entry: no run applies, and only a delivery that breaks
		// the entry's run withdraws it. The bounce at exactly 14 days before the run's end is
		// outside its window, so the delivery after it is not inside the run.
		const start = daysAgo(20);
		const end = start + 14 * DAY;
		const two = { ...env, SOFT_BOUNCE_LIMIT: "2" } as Env;
		await post([soft("raised@example.com", start), soft("raised@example.com", end - 60)], two);
		await post(soft("raised@example.com", end), two);
		const [entry] = await entriesOf("raised@example.com");
		expect(entry?.lastEventAt).toBe(iso(end));
		await post(delivered("raised@example.com", start + 60));
		expect(await entriesOf("raised@example.com")).toEqual([entry]);
	});

	it("a delivery to an address without a live soft entry queues no recheck", async () => {
		await post([soft("calm@example.com", t), delivered("calm@example.com", t + 60)]);
		await post(delivered("calm@example.com", t + 120));
		expect(await countRows("soft_bounce_recheck")).toBe(0);
	});

	it("a delivery to an address with an operator's bounce entry, not a soft one, is stored in one round trip", async () => {
		// Live, on the bounce list, for every sender and with an expiry, as a soft entry is: only its
		// origin differs.
		await putSuppression("operator@example.com", {
			list: "bounce",
			scope: "*",
			expiresAt: "2041-06-01T00:00:00Z",
		});
		const d1 = countingD1();
		await post(delivered("operator@example.com", t + 60), d1.env);
		expect(d1.counts).toEqual({ batches: 1, single: 0, rowsRead: expect.any(Number) });
		expect(await countRows("soft_bounce_recheck")).toBe(0);
		expect(await entriesOf("operator@example.com")).toEqual([
			expect.objectContaining({ list: "bounce", source: "api", expiresAt: "2041-06-01T00:00:00Z" }),
		]);
	});

	it("a soft entry is decided again for a delivery received before it expires, not in its last second", async () => {
		const run = (email: string) => [soft(email, t), soft(email, t + 60), soft(email, t + 120)];
		await post([...run("before@example.com"), ...run("at@example.com")]);
		const [entry] = await entriesOf("at@example.com");
		const expiresAt = Date.parse(entry?.expiresAt ?? "") / 1000;
		expect(expiresAt).toBe(t + 120 + 14 * DAY);
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			// Received one second before the entry expires: the entry is live, so decided again.
			vi.setSystemTime((expiresAt - 1) * 1000);
			const live = countingD1();
			await post(delivered("before@example.com", t + 200), live.env);
			expect(live.counts.batches).toBe(2);
			// Received in the second it expires: the entry no longer applies, so nothing to decide.
			vi.setSystemTime(expiresAt * 1000);
			const expired = countingD1();
			await post(delivered("at@example.com", t + 200), expired.env);
			expect(expired.counts).toEqual({ batches: 1, single: 0, rowsRead: expect.any(Number) });
		} finally {
			vi.useRealTimers();
		}
		expect(await countRows("soft_bounce_recheck")).toBe(0);
	});

	it("a late delivery is decided at once and leaves nothing queued", async () => {
		await post([
			soft("q@example.com", t),
			soft("q@example.com", t + 60),
			soft("q@example.com", t + 120),
		]);
		await post(delivered("q@example.com", t + 90));
		expect(await entriesOf("q@example.com")).toEqual([]);
		expect(await countRows("soft_bounce_recheck")).toBe(0);
	});

	it("when deciding a late delivery fails, the callback succeeds and the cron decides it", async () => {
		const email = "retry@example.com";
		await post([soft(email, t), soft(email, t + 60), soft(email, t + 120)]);
		expect((await lookup(email)).suppressed).toBe(true);
		expect(await env.SUPPRESSIONS.get(`s:${email}`)).not.toBeNull();
		// The first batch stores the delivery and queues the address; the second, the recheck, fails.
		const response = await postCallback(delivered(email, t + 90), {
			env: envWithNthBatchFailing(2),
		});
		expect(await response.json()).toEqual({ ok: true, received: 1, stored: 1, duplicates: 0 });
		expect(await entriesOf(email)).toHaveLength(1);
		expect(await countRows("soft_bounce_recheck")).toBe(1);
		await runCron();
		expect(await lookup(email)).toEqual({ email, suppressed: false, entries: [] });
		expect(await countRows("soft_bounce_recheck")).toBe(0);
		// The KV copy followed: the edge answers not suppressed too.
		expect(await env.SUPPRESSIONS.get(`s:${email}`)).toBeNull();
	});

	it("retention keeps the events of an address whose recheck waits for a cron that ran late", async () => {
		// Soft bounces suppress for longer than events are kept (allowed: only the window is bound).
		const settings = {
			...env,
			EVENT_RETENTION_DAYS: "14",
			SOFT_BOUNCE_WINDOW_DAYS: "14",
			SOFT_BOUNCE_SUPPRESS_DAYS: "30",
		};
		const now = Math.floor(Date.now() / 1000);
		const email = "gap@example.com";
		const at = now - 16 * DAY;
		await post([soft(email, at), soft(email, at + 60), soft(email, at + 120)], settings);
		// A delivery inside the run, received 13 days after the bounces, whose recheck failed.
		await postCallback(delivered(email, at + 90), {
			env: { ...settings, DB: envWithNthBatchFailing(2).DB },
		});
		expect(await countRows("soft_bounce_recheck")).toBe(1);
		await env.DB.batch([
			env.DB.prepare("UPDATE events SET received_at = ?1 WHERE event = 'bounce'").bind(at + 200),
			env.DB.prepare("UPDATE events SET received_at = ?1 WHERE event = 'delivered'").bind(
				now - 3 * DAY,
			),
		]);
		// The cron comes back 3 days later: its retention must not take the run's bounces before its
		// recheck has read them, or the entry the delivery broke would stand for 14 more days.
		await runCron(now * 1000, settings);
		expect(await countRows("soft_bounce_recheck")).toBe(0);
		expect(await entriesOf(email)).toEqual([]);
		// Once it is decided, the bounces go with the next run; the delivery is 3 days old.
		await runCron(now * 1000 + 300_000, settings);
		expect(await countRows("events")).toBe(1);
	});

	it("the cron decides as many queued addresses as RECONCILE_BATCH_SIZE in one run", async () => {
		const email = "one@example.com";
		await post([soft(email, t), soft(email, t + 60), soft(email, t + 120)]);
		await postCallback(delivered(email, t + 90), { env: envWithNthBatchFailing(2) });
		expect(await countRows("soft_bounce_recheck")).toBe(1);
		await runCron(Date.now(), { ...env, RECONCILE_BATCH_SIZE: "1" });
		expect(await countRows("soft_bounce_recheck")).toBe(0);
		expect(await entriesOf(email)).toEqual([]);
	});

	it("a late delivery falls back to the latest run it leaves intact", async () => {
		const early = [
			soft("two@example.com", t),
			soft("two@example.com", t + 10),
			soft("two@example.com", t + 20),
		];
		const later = [
			soft("two@example.com", t + 100),
			soft("two@example.com", t + 110),
			soft("two@example.com", t + 120),
		];
		await post([...early, ...later]);
		expect((await entriesOf("two@example.com"))[0]?.lastEventAt).toBe(iso(t + 120));
		// t, t+10, t+20 and t+100 are still four soft bounces with no delivery between them.
		await post(delivered("two@example.com", t + 105));
		expect(await entriesOf("two@example.com")).toEqual([
			expect.objectContaining({
				eventCount: 4,
				lastEventAt: iso(t + 100),
				expiresAt: iso(t + 100 + 14 * DAY),
			}),
		]);
		// A delivery after t+20 leaves only the first run.
		await post(delivered("two@example.com", t + 50));
		expect(await entriesOf("two@example.com")).toEqual([
			expect.objectContaining({
				eventCount: 3,
				lastEventAt: iso(t + 20),
				expiresAt: iso(t + 20 + 14 * DAY),
			}),
		]);
	});

	it("a repeated soft bounce counts once", async () => {
		const one = soft("dup@example.com", t);
		await post([one, one, one]);
		await post(one);
		expect(await entriesOf("dup@example.com")).toEqual([]);
	});

	it("soft bounces from last year suppress nothing today", async () => {
		const old = daysAgo(365);
		await post([
			soft("y@example.com", old),
			soft("y@example.com", old + 1),
			soft("y@example.com", old + 2),
		]);
		expect(await entriesOf("y@example.com")).toEqual([]);
		expect(await countRows("suppressions")).toBe(0);
		expect(await countRows("suppression_history")).toBe(0);
	});

	it("a bounce without a type counts as soft", async () => {
		const untyped = (at: number) => ({
			event: "bounce",
			bounceType: "",
			email: "u@example.com",
			timestamp: at,
		});
		await post([untyped(t), untyped(t + 1), untyped(t + 2)]);
		expect((await entriesOf("u@example.com"))[0]?.expiresAt).toBe(iso(t + 2 + 14 * DAY));
	});

	it("SOFT_BOUNCE_LIMIT, WINDOW and SUPPRESS days are settings", async () => {
		const strict = { ...env, SOFT_BOUNCE_LIMIT: "1", SOFT_BOUNCE_SUPPRESS_DAYS: "2" };
		const recent = daysAgo(1);
		await post(soft("one@example.com", recent), strict);
		expect((await entriesOf("one@example.com"))[0]?.expiresAt).toBe(iso(recent + 2 * DAY));
		await post(soft("gone@example.com", daysAgo(3)), strict);
		expect(await entriesOf("gone@example.com")).toEqual([]);
		const wide = { ...env, SOFT_BOUNCE_WINDOW_DAYS: "30" };
		await post(
			[
				soft("wide@example.com", daysAgo(25)),
				soft("wide@example.com", daysAgo(15)),
				soft("wide@example.com", daysAgo(1)),
			],
			wide,
		);
		expect((await entriesOf("wide@example.com"))[0]?.eventCount).toBe(3);
	});

	it("a changed soft-bounce setting applies when the address is next decided; an entry no run makes any more stands", async () => {
		const t = daysAgo(12);
		// Two soft bounces under a limit of 3: no entry, even after a cron run under a limit of 2.
		const two = { ...env, SOFT_BOUNCE_LIMIT: "2" } as Env;
		await post([soft("lowered@example.com", t), soft("lowered@example.com", t + 60)]);
		await runCron(Date.now(), two);
		expect(await entriesOf("lowered@example.com")).toEqual([]);
		// The next soft bounce of the address, a redelivered one too, decides it under the new limit.
		await post(soft("lowered@example.com", t + 60), two);
		expect(await entriesOf("lowered@example.com")).toMatchObject([
			{ eventCount: 2, expiresAt: iso(t + 60 + 14 * DAY) },
		]);
		// A run over 10 days, then a window of 3 days: no run of 3 is left, and the entry stands.
		await post([soft("narrowed@example.com", t), soft("narrowed@example.com", t + 5 * DAY)]);
		await post(soft("narrowed@example.com", t + 10 * DAY));
		const [entry] = await entriesOf("narrowed@example.com");
		const three = { ...env, SOFT_BOUNCE_WINDOW_DAYS: "3" } as Env;
		await post(soft("narrowed@example.com", t + 11 * DAY), three);
		await runCron(Date.now(), three);
		expect(await entriesOf("narrowed@example.com")).toEqual([entry]);
	});
});

describe("complaints and unsubscribes", () => {
	it("a spam report makes a complaint entry for every sender that never expires", async () => {
		await post({
			event: "spamreport",
			email: "c@example.com",
			timestamp: 1000,
			fromDomain: "news.example.com",
		});
		expect(await entriesOf("c@example.com")).toEqual([
			expect.objectContaining({ list: "complaint", scope: "*", expiresAt: null, eventCount: 1 }),
		]);
	});

	it("an unsubscribe from news.example.com suppresses for that domain only", async () => {
		await post({
			event: "unsubscribe",
			email: "n@example.com",
			timestamp: 1000,
			fromDomain: "news.example.com",
		});
		expect((await lookup("n@example.com", "?fromDomain=news.example.com")).suppressed).toBe(true);
		expect((await lookup("n@example.com", "?fromDomain=NEWS.example.com")).suppressed).toBe(true);
		expect(await lookup("n@example.com", "?fromDomain=shop.example.com")).toEqual({
			email: "n@example.com",
			suppressed: false,
			entries: [],
		});
		// Without fromDomain the conservative answer: any entry suppresses.
		expect((await lookup("n@example.com")).suppressed).toBe(true);
	});

	it("a scope in another Unicode form still matches the sender's domain", async () => {
		// "bücher.de" with the umlaut as a combining mark (NFD), as some systems spell it.
		await post([
			{ event: "unsubscribe", email: "u@example.com", timestamp: 1, fromDomain: "Bu\u0308cher.de" },
			{ event: "unsubscribe", email: "v@example.com", timestamp: 1, from: "n@BU\u0308CHER.de" },
		]);
		for (const email of ["u@example.com", "v@example.com"]) {
			expect((await entriesOf(email))[0]?.scope).toBe("b\u00fccher.de");
			for (const domain of ["b%C3%BCcher.de", "bu%CC%88cher.de"]) {
				expect((await lookup(email, `?fromDomain=${domain}`)).suppressed).toBe(true);
			}
		}
		const check = await call("/v1/suppressions/check", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
			body: JSON.stringify({ emails: ["u@example.com"], fromDomain: "bu\u0308cher.de" }),
		});
		expect(((await check.json()) as { suppressedCount: number }).suppressedCount).toBe(1);
	});

	it("takes the scope from the domain of from, else every sender", async () => {
		await post([
			{ event: "unsubscribe", email: "f@example.com", timestamp: 1, from: "News@Mail.Example.com" },
			{ event: "unsubscribe", email: "g@example.com", timestamp: 1 },
		]);
		expect((await entriesOf("f@example.com"))[0]?.scope).toBe("mail.example.com");
		expect((await entriesOf("g@example.com"))[0]?.scope).toBe("*");
	});

	it("a fromDomain that is no domain name gives way to the domain of from, else every sender", async () => {
		await post([
			{
				event: "unsubscribe",
				email: "at@example.com",
				timestamp: 1,
				fromDomain: "news@example.com",
				from: "n@news.example.com",
			},
			{ event: "unsubscribe", email: "slash@example.com", timestamp: 1, fromDomain: "a/b" },
			// A plausible address whose domain no lookup could name.
			{ event: "unsubscribe", email: "from@example.com", timestamp: 1, from: "n@ex/ample.com" },
		]);
		expect((await entriesOf("at@example.com"))[0]?.scope).toBe("news.example.com");
		expect((await entriesOf("slash@example.com"))[0]?.scope).toBe("*");
		expect((await entriesOf("from@example.com"))[0]?.scope).toBe("*");
	});

	it("UNSUBSCRIBE_SCOPE=global makes every unsubscribe apply to every sender", async () => {
		const global = { ...env, UNSUBSCRIBE_SCOPE: "global" };
		await post(
			{
				event: "unsubscribe",
				email: "all@example.com",
				timestamp: 1,
				fromDomain: "news.example.com",
			},
			global,
		);
		expect((await lookup("all@example.com", "?fromDomain=shop.example.com")).suppressed).toBe(true);
	});
});

describe("other events change nothing", () => {
	it.each(["delivered", "open", "click", "deferred", "dropped", "processed"])(
		"%s",
		async (event) => {
			const kv = countingKv();
			await post(
				{ event, email: "o@example.com", timestamp: 1, fromDomain: "news.example.com" },
				kv.env,
			);
			expect(await entriesOf("o@example.com")).toEqual([]);
			expect(kv.counts).toEqual({ put: 0, delete: 0, get: 0, list: 0 });
		},
	);
});

describe("KV writes", () => {
	it("one put per actual change, none for a redelivery", async () => {
		const kv = countingKv();
		await post(hard("k@example.com", 1000), kv.env);
		expect(kv.counts.put).toBe(1);
		await post(hard("k@example.com", 1000), kv.env);
		expect(kv.counts.put).toBe(1);
		await post(hard("k@example.com", 2000), kv.env);
		expect(kv.counts.put).toBe(2);
		expect(JSON.parse((await env.SUPPRESSIONS.get("s:k@example.com")) ?? "[]")).toEqual([
			expect.objectContaining({ list: "bounce", eventCount: 2, lastEventAt: iso(2000) }),
		]);
	});

	it("a key expires with its entries, never while one of them still applies", async () => {
		const days30 = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "30" };
		const latest = 2 ** 31 - 1; // the latest expiration KV takes
		await post(hard("ends@example.com", latest - 30 * DAY), days30);
		await post(hard("later@example.com", latest + 1 - 30 * DAY), days30);
		await post(hard("never@example.com", 1000));
		const { keys } = await env.SUPPRESSIONS.list();
		const expiration = Object.fromEntries(keys.map((key) => [key.name, key.expiration ?? null]));
		expect(expiration).toEqual({
			"s:ends@example.com": latest,
			"s:later@example.com": null,
			"s:never@example.com": null,
		});
	});

	it("a soft bounce that leaves the run's entry as it was writes nothing", async () => {
		const t = daysAgo(3);
		const run = [soft("same@example.com", t), soft("same@example.com", t + 60)];
		await post([...run, soft("same@example.com", t + 120)]);
		const kv = countingKv();
		// A redelivery, and an older soft bounce outside the window: the entry stays the same.
		await post(run, kv.env);
		await post(soft("same@example.com", daysAgo(30)), kv.env);
		expect(kv.counts.put).toBe(0);
		const history = await env.DB.prepare("SELECT action FROM suppression_history").all();
		expect(history.results).toEqual([{ action: "added" }]);
	});

	it("a suppressing callback reads its entries back in its own batch, and again after its KV write", async () => {
		const d1 = countingD1();
		await post(hard("one@example.com", 1000), d1.env);
		// The batch, then (after the answer) the read that tells whether a later change overtook
		// the KV write (edge.ts, writesOvertaken).
		expect(d1.counts).toEqual({ batches: 1, single: 1, rowsRead: expect.any(Number) });
		const { entries } = await lookup("one@example.com", "?consistent=true");
		expect(entries).toHaveLength(1);
		expect(JSON.parse((await env.SUPPRESSIONS.get("s:one@example.com")) ?? "[]")).toEqual(entries);
	});

	it("an entry the late-delivery recheck changes is read again before KV is written", async () => {
		const email = "both@example.com";
		const t = daysAgo(3);
		await post([soft(email, t), soft(email, t + 60), soft(email, t + 120)]);
		const d1 = countingD1();
		// The batch reads the address back with its soft entry still live; the recheck that
		// follows withdraws that entry, so the edge sync must not write what the batch read.
		await post([delivered(email, t + 90), hard(email, t + 100)], d1.env);
		// The callback's batch, the recheck's, its read of the entries, and the read after the write.
		expect(d1.counts).toEqual({ batches: 2, single: 2, rowsRead: expect.any(Number) });
		const { entries } = await lookup(email, "?consistent=true");
		expect(entries).toEqual([expect.objectContaining({ list: "bounce", source: "event" })]);
		expect(JSON.parse((await env.SUPPRESSIONS.get(`s:${email}`)) ?? "[]")).toEqual(entries);
	});

	it("a callback that withdraws an address's last entry deletes its KV key", async () => {
		const email = "gone@example.com";
		const t = daysAgo(3);
		await post([soft(email, t), soft(email, t + 60), soft(email, t + 120)]);
		expect(await env.SUPPRESSIONS.get(`s:${email}`)).not.toBeNull();
		// The delivery breaks the run in the callback's own batch: after it come only two bounces.
		await post([delivered(email, t + 90), soft(email, t + 180)]);
		expect(await entriesOf(email)).toEqual([]);
		expect(await env.SUPPRESSIONS.get(`s:${email}`)).toBeNull();
		expect((await lookup(email)).suppressed).toBe(false);
	});

	it("a failing KV put leaves the callback stored and the cron repairs KV", async () => {
		const kv = countingKv({ put: true });
		await post(hard("fail@example.com", 1000), kv.env);
		expect(kv.counts.put).toBe(2); // its key, and the mark that KV lags (refused as well)
		expect(await env.SUPPRESSIONS.get("s:fail@example.com")).toBeNull();
		expect((await lookup("fail@example.com", "?consistent=true")).suppressed).toBe(true);
		const { runCron } = await import("../helpers");
		await runCron();
		expect((await lookup("fail@example.com")).suppressed).toBe(true);
	});
});

describe("cost", () => {
	/** The rows D1 reads for the callback of `event`, over every batch it sends. */
	async function rowsReadPosting(event: Event): Promise<number> {
		let rowsRead = 0;
		const counting = envWithBatch(async (batch, statements) => {
			const results = await batch(statements);
			for (const result of results) rowsRead += result.meta.rows_read ?? 0;
			return results;
		});
		await post(event, counting);
		return rowsRead;
	}

	// The soft-bounce rule once scanned every stored event (see docs/scaling.md); these fail if a
	// statement of any of these callbacks reads more than its own address's events again.
	it.each([
		["a delivery", [], delivered("new@example.com", 5000)],
		[
			"a soft bounce",
			[soft("new@example.com", 4000), soft("new@example.com", 4100)],
			soft("new@example.com", 5000),
		],
		[
			"a late delivery to a soft-suppressed address",
			[soft("new@example.com", 4000), soft("new@example.com", 4100), soft("new@example.com", 5000)],
			delivered("new@example.com", 4050),
		],
	])(
		"%s reads only its own address's events, however many others are stored",
		async (_, before, event) => {
			const others = Array.from({ length: 1500 }, (_, i) =>
				i % 2
					? delivered(`other${i}@example.com`, 1000 + i)
					: soft(`other${i}@example.com`, 1000 + i),
			);
			for (let i = 0; i < others.length; i += 100) await post(others.slice(i, i + 100));
			if (before.length > 0) await post(before);
			const rowsRead = await rowsReadPosting(event);
			expect(rowsRead).toBeGreaterThan(0);
			expect(rowsRead).toBeLessThan(50);
		},
	);

	// Deciding the soft-bounce entry once read, for every soft bounce still in force, every event
	// around it: the square of an address's events, 1.5 s of D1 for one more bounce to an address
	// with 4,000 (docs/scaling.md). These fail if it reads more than a few rows per stored event.
	const many = 400;
	const start = daysAgo(5);
	it.each([
		[
			"one more soft bounce after a long run",
			Array.from({ length: many }, (_, i) => soft("many@example.com", start + i * 60)),
			soft("many@example.com", start + many * 60),
		],
		[
			"a late delivery inside a long run",
			Array.from({ length: many }, (_, i) => soft("many@example.com", start + i * 60)),
			delivered("many@example.com", start + (many / 2) * 60 + 30),
		],
		[
			"one more soft bounce after runs that deliveries keep breaking",
			Array.from({ length: many }, (_, i) =>
				i % 2
					? delivered("many@example.com", start + i * 60)
					: soft("many@example.com", start + i * 60),
			),
			soft("many@example.com", start + many * 60),
		],
		[
			"one more soft bounce in a second that already holds many",
			Array.from({ length: many }, (_, i) => soft("many@example.com", start, `452 full ${i}`)),
			soft("many@example.com", start, "452 full again"),
		],
		[
			"one more soft bounce in a second that holds many and a delivery",
			[
				delivered("many@example.com", start),
				...Array.from({ length: many - 1 }, (_, i) =>
					soft("many@example.com", start, `452 full ${i}`),
				),
			],
			soft("many@example.com", start, "452 full again"),
		],
		[
			"one more soft bounce among many opens",
			Array.from({ length: many }, (_, i) =>
				i % 50
					? { event: "open", email: "many@example.com", timestamp: start + i * 60 }
					: soft("many@example.com", start + i * 60),
			),
			soft("many@example.com", start + many * 60),
		],
	])("%s reads rows in proportion to the address's events", async (_, before, event) => {
		for (let i = 0; i < before.length; i += 100) await post(before.slice(i, i + 100));
		const rowsRead = await rowsReadPosting(event);
		expect(rowsRead).toBeGreaterThan(0);
		expect(rowsRead).toBeLessThan(8 * many);
	});

	it("a delivery that breaks a run after many earlier deliveries reads rows in proportion to them", async () => {
		// Whether a stored delivery breaks the entry's run was asked delivery by delivery, each
		// looking back through the window for a soft bounce before it: the square of the deliveries
		// that came before the run (8 million rows for 4,000 of them, one array of 1,000 at a time).
		const before = [
			...Array.from({ length: many - 3 }, (_, i) => delivered("many@example.com", start + i * 60)),
			...[0, 1, 2].map((i) => soft("many@example.com", start + (many + i) * 60)),
		];
		for (let i = 0; i < before.length; i += 100) await post(before.slice(i, i + 100));
		expect((await lookup("many@example.com", "?consistent=true")).suppressed).toBe(true);
		const rowsRead = await rowsReadPosting(delivered("many@example.com", start + (many + 2) * 60));
		expect((await lookup("many@example.com", "?consistent=true")).suppressed).toBe(false);
		expect(rowsRead).toBeLessThan(8 * many);
	});
});

describe("storage failure", () => {
	it("a failing batch stores no event, entry, history or rollup; the retry stores them once", async () => {
		const { envWithFailingBatch, countRows } = await import("../helpers");
		const events = [
			hard("f@example.com", 1000),
			{
				event: "unsubscribe",
				email: "f@example.com",
				timestamp: 1000,
				fromDomain: "news.example.com",
			},
		];
		const failed = await postCallback(events, { env: envWithFailingBatch() });
		expect(failed.status).toBe(503);
		for (const table of ["events", "suppressions", "suppression_history", "daily_stats"]) {
			expect(await countRows(table)).toBe(0);
		}
		await post(events);
		await post(events);
		expect(await countRows("events")).toBe(2);
		expect(await entriesOf("f@example.com")).toEqual([
			expect.objectContaining({ list: "bounce", eventCount: 1 }),
			expect.objectContaining({ list: "unsubscribe", eventCount: 1 }),
		]);
		expect(await countRows("suppression_history")).toBe(2);
	});
});

describe("removal", () => {
	it("DELETE lifts the entry and an older bounce does not bring it back; a newer one does", async () => {
		await post(docSamples[3] as Event);
		expect(await remove("example@example.com")).toEqual({
			email: "example@example.com",
			removed: 1,
		});
		expect((await lookup("example@example.com")).suppressed).toBe(false);

		await post(docSamples[4] as Event); // another bounce of 2022, before the removal
		expect((await lookup("example@example.com", "?consistent=true")).suppressed).toBe(false);

		await post(hard("example@example.com", Math.floor(Date.now() / 1000) + 5));
		expect((await lookup("example@example.com")).suppressed).toBe(true);
	});

	it("an older soft-bounce run does not bring a removed bounce entry back", async () => {
		const t = daysAgo(2);
		await post(hard("sr@example.com", t));
		await remove("sr@example.com");
		await post([
			soft("sr@example.com", t + 1),
			soft("sr@example.com", t + 2),
			soft("sr@example.com", t + 3),
		]);
		expect(await entriesOf("sr@example.com")).toEqual([]);
	});

	it("a bounce in the very second of the removal does not bring the entry back", async () => {
		await post(hard("second@example.com", 1000));
		await remove("second@example.com");
		const removal = await env.DB.prepare(
			"SELECT removed_at AS at FROM suppression_removals WHERE email = ? AND list = 'bounce'",
		)
			.bind("second@example.com")
			.first<{ at: number }>();
		const removedAt = removal?.at as number;
		await post(hard("second@example.com", removedAt, "550 same second"));
		expect(await entriesOf("second@example.com")).toEqual([]);
		await post(hard("second@example.com", removedAt + 1, "550 a second later"));
		expect(await entriesOf("second@example.com")).toEqual([
			expect.objectContaining({ reason: "550 a second later", eventCount: 1 }),
		]);
	});

	it("a removal of bounces for one sender domain does not hold back soft-bounce runs", async () => {
		expect(await remove("scoped@example.com", "?list=bounce&scope=news.example.com")).toMatchObject(
			{ removed: 0 },
		);
		const t = daysAgo(3);
		await post([
			soft("scoped@example.com", t),
			soft("scoped@example.com", t + 60),
			soft("scoped@example.com", t + 120),
		]);
		expect(await entriesOf("scoped@example.com")).toEqual([
			expect.objectContaining({ list: "bounce", scope: "*", eventCount: 3 }),
		]);
	});

	it("a removal of an exact list and scope holds even before any entry existed", async () => {
		expect(
			await remove("pre@example.com", "?list=unsubscribe&scope=news.example.com"),
		).toMatchObject({ removed: 0 });
		await post({
			event: "unsubscribe",
			email: "pre@example.com",
			timestamp: 1000,
			fromDomain: "news.example.com",
		});
		expect(await entriesOf("pre@example.com")).toEqual([]);
	});
	it.each([
		["?list=bounce", ["bounce"]],
		["?list=complaint&scope=*", ["complaint"]],
		["", ["bounce", "complaint", "unsubscribe"]],
	])(
		"a removal with %j holds for its lists even before any entry existed",
		async (query, lifted) => {
			expect(await remove("early@example.com", query)).toMatchObject({ removed: 0 });
			const t = daysAgo(1);
			await post([
				hard("early@example.com", t),
				{ event: "spamreport", email: "early@example.com", timestamp: t },
				{ event: "unsubscribe", email: "early@example.com", timestamp: t },
				soft("early@example.com", t + 1),
				soft("early@example.com", t + 2),
			]);
			const lists = (await entriesOf("early@example.com")).map((entry) => entry.list);
			expect(lists).toEqual(
				["bounce", "complaint", "unsubscribe"].filter((list) => !lifted.includes(list)),
			);
			// A soft bounce after the removal, with the two before it, is a run of three only when the
			// removal did not lift bounces.
			await post(soft("early@example.com", Math.floor(Date.now() / 1000) + 5));
			const soft3 = (await entriesOf("early@example.com")).some(
				(entry) => entry.list === "bounce" && entry.expiresAt !== null,
			);
			expect(soft3).toBe(!lifted.includes("bounce"));
		},
	);
});

describe("arrival order and duplicates", () => {
	const t = daysAgo(5);
	const events = [
		hard("o@example.com", t, "first hard"),
		hard("o@example.com", t + 50, "second hard"),
		{ event: "spamreport", email: "o@example.com", timestamp: t + 10 },
		{
			event: "unsubscribe",
			email: "o@example.com",
			timestamp: t + 20,
			fromDomain: "news.example.com",
		},
		soft("p@example.com", t),
		soft("p@example.com", t + 10),
		delivered("p@example.com", t + 15),
		soft("p@example.com", t + 20),
		soft("p@example.com", t + 30),
		soft("p@example.com", t + 40),
		delivered("p@example.com", t + 100),
	];

	function shuffled<T>(items: T[], seed: number): T[] {
		const out = [...items];
		let state = seed;
		for (let i = out.length - 1; i > 0; i--) {
			state = (state * 1103515245 + 12345) % 2147483648;
			const j = state % (i + 1);
			[out[i], out[j]] = [out[j] as T, out[i] as T];
		}
		return out;
	}

	it("the same events give the same entries in any order, one by one, with repeats", async () => {
		await post(events);
		const expected = [await entriesOf("o@example.com"), await entriesOf("p@example.com")];
		expect(expected[0]).toHaveLength(3);
		expect(expected[1]).toEqual([
			expect.objectContaining({ eventCount: 3, lastEventAt: iso(t + 40) }),
		]);
		for (const seed of [1, 2, 3, 4, 5]) {
			await resetDatabase();
			const order = shuffled(events, seed);
			for (const event of order) await post(event);
			await post(order.slice(0, 4)); // redeliveries
			expect([await entriesOf("o@example.com"), await entriesOf("p@example.com")]).toEqual(
				expected,
			);
		}
	});
});
