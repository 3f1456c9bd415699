import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { call, daysAgo, lookup, postCallback, resetDatabase, tokens } from "../helpers";

type Event = Record<string, unknown>;

const soft = (email: string, at: number): Event => ({
	event: "bounce",
	bounceType: "soft_bounce",
	email,
	timestamp: at,
	reason: "452 4.2.2 mailbox full",
});
const delivered = (email: string, at: number): Event => ({
	event: "delivered",
	email,
	timestamp: at,
});

async function post(events: Event | Event[], testEnv: Env = env): Promise<void> {
	expect((await postCallback(events, { env: testEnv })).status).toBe(200);
}

async function suppressed(email: string): Promise<{ edge: boolean; d1: boolean }> {
	return {
		edge: (await lookup(email)).suppressed,
		d1: (await lookup(email, "?consistent=true")).suppressed,
	};
}

beforeEach(resetDatabase);

describe("a soft-bounce entry whose run is no longer stored", () => {
	const t = daysAgo(3);

	it("is not withdrawn by a late delivery that occurred before the run began", async () => {
		const email = "erased@example.com";
		await post([soft(email, t), soft(email, t + 60), soft(email, t + 120)]);
		// With every event stored, such a delivery breaks nothing: the run came after it.
		await post(delivered("control@example.com", t - 3600));
		await post([
			soft("control@example.com", t),
			soft("control@example.com", t + 60),
			soft("control@example.com", t + 120),
		]);
		await post(delivered("control@example.com", t - 1800));
		expect(await suppressed("control@example.com")).toEqual({ edge: true, d1: true });
		// The address's events erased, its entries kept: "an erased person is still never mailed".
		const erased = await call(`/v1/addresses/${encodeURIComponent(email)}`, {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(erased.status).toBe(200);
		await post(delivered(email, t - 3600));
		expect(await suppressed(email)).toEqual({ edge: true, d1: true });
	});

	it("is not withdrawn when retention took the run's first bounce and the delivery precedes it", async () => {
		const email = "pruned@example.com";
		await post([soft(email, t), soft(email, t + 60), soft(email, t + 120)]);
		await env.DB.prepare("DELETE FROM events WHERE email = ? AND occurred_at = ?")
			.bind(email, t)
			.run();
		await post(delivered(email, t - 3600));
		expect(await suppressed(email)).toEqual({ edge: true, d1: true });
		// A delivery between the stored bounces of the run still breaks it.
		await post(delivered(email, t + 90));
		expect(await suppressed(email)).toEqual({ edge: false, d1: false });
	});
});

describe("an imported entry that carries no lastEventAt", () => {
	const DAY = 86_400;
	const hard = (email: string, at: number): Event => ({
		event: "bounce",
		bounceType: "hard_bounce",
		email,
		timestamp: at,
		reason: "550 5.1.1 no such user",
	});

	async function importCsv(line: string): Promise<void> {
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "text/csv" },
			body: `email,list,scope,reason,source,created_at,updated_at,expires_at\r\n${line}\r\n`,
		});
		expect(await response.json()).toMatchObject({ imported: 1, failed: [] });
	}

	it("takes the expiry of a later hard bounce, which never expires", async () => {
		// A soft-bounce entry migrated from another database: CSV carries no event times.
		const now = Math.floor(Date.now() / 1000);
		const expires = new Date((now + 10 * DAY) * 1000).toISOString();
		await importCsv(`imported@example.com,bounce,*,452 mailbox full,event,,,${expires}`);
		await post(hard("imported@example.com", now - 60));
		const { entries } = await lookup("imported@example.com", "?consistent=true");
		expect(entries.map((entry) => [entry.reason, entry.lastEventAt, entry.expiresAt])).toEqual([
			[
				"550 5.1.1 no such user",
				new Date((now - 60) * 1000).toISOString().replace(".000", ""),
				null,
			],
		]);
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime((now + 11 * DAY) * 1000);
			expect(await suppressed("imported@example.com")).toEqual({ edge: true, d1: true });
		} finally {
			vi.useRealTimers();
		}
	});

	it("with lastEventAt and no event id, takes the details of a hard bounce in that second", async () => {
		const now = Math.floor(Date.now() / 1000);
		const line = {
			email: "tie@example.com",
			list: "bounce",
			scope: "*",
			reason: "452 mailbox full",
			source: "event",
			lastEventAt: now - 60,
			expiresAt: now + 10 * DAY,
		};
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "application/x-ndjson" },
			body: `${JSON.stringify(line)}\n`,
		});
		expect(await response.json()).toMatchObject({ imported: 1, failed: [] });
		await post(hard("tie@example.com", now - 60));
		const { entries } = await lookup("tie@example.com", "?consistent=true");
		expect(entries.map((entry) => [entry.reason, entry.expiresAt])).toEqual([
			["550 5.1.1 no such user", null],
		]);
	});

	it("is brought back by a hard bounce once it has run out, before the cron retires it", async () => {
		const now = Math.floor(Date.now() / 1000);
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime((now - DAY) * 1000);
			const expires = new Date((now - 600) * 1000).toISOString();
			await importCsv(`ranout@example.com,bounce,*,452 mailbox full,event,,,${expires}`);
			vi.setSystemTime(now * 1000);
			await post(hard("ranout@example.com", now - 60));
			expect(await suppressed("ranout@example.com")).toEqual({ edge: true, d1: true });
		} finally {
			vi.useRealTimers();
		}
	});
});
