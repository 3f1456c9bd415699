import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
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
