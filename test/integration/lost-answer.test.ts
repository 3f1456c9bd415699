import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { envWithBatch, lookup, postCallback, resetDatabase } from "../helpers";

/**
 * D1 in production may commit a write and still fail to answer it (its documented
 * `Network connection lost.`, whose recommended action is to retry): the Worker then reports a
 * failure for a write that took effect. Local D1 never does, so these tests wrap the binding to
 * commit and then throw, once.
 */
function envLosingFirstBatchAnswer(): Env {
	let lost = false;
	return envWithBatch(async (batch, statements) => {
		const results = await batch(statements);
		if (lost) return results;
		lost = true;
		throw new Error("D1_ERROR: Network connection lost.");
	});
}

const bounce = {
	event: "bounce",
	bounceType: "hard_bounce",
	email: "lost-answer@example.com",
	timestamp: 1767225600,
};

beforeEach(resetDatabase);

describe("a callback whose batch committed but whose answer D1 lost", () => {
	it("answers 503, and its redelivery writes the KV key the first delivery never wrote", async () => {
		const first = await postCallback(bounce, { env: envLosingFirstBatchAnswer() });
		expect(first.status).toBe(503);
		// The entry is in D1 although the callback failed.
		expect((await lookup(bounce.email, "?consistent=true")).suppressed).toBe(true);

		const again = await postCallback(bounce);
		expect(await again.json()).toMatchObject({ stored: 0, duplicates: 1 });
		// KV now says what D1 says, without waiting for the cron.
		expect(await env.SUPPRESSIONS.get(`s:${bounce.email}`)).not.toBeNull();
		expect((await lookup(bounce.email)).suppressed).toBe(true);
	});

	it("a redelivered delivery or open writes no key", async () => {
		const open = { event: "open", email: "reader@example.com", timestamp: 1767225600 };
		await postCallback(open);
		await postCallback(open);
		expect((await env.SUPPRESSIONS.list()).keys).toEqual([]);
	});
});
