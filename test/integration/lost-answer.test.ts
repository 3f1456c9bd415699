import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { EDGE_SYNC_AT_ONCE } from "../../src/suppressions/edge";
import {
	call,
	countingKv,
	daysAgo,
	envWithBatch,
	lookup,
	postCallback,
	resetDatabase,
	tokens,
} from "../helpers";

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

/** An env whose D1 runs the first statement whose SQL starts with `prefix`, then throws. */
function envLosingFirstAnswerOf(prefix: string): Env {
	let lost = false;
	const losing = (statement: D1PreparedStatement, sql: string): D1PreparedStatement =>
		new Proxy(statement, {
			get(target, property) {
				if (property === "bind") {
					return (...values: unknown[]) => losing(target.bind(...values), sql);
				}
				if (property === "all" && sql.trimStart().startsWith(prefix)) {
					return async () => {
						const results = await target.all();
						if (lost) return results;
						lost = true;
						throw new Error("D1_ERROR: Network connection lost.");
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") return (sql: string) => losing(target.prepare(sql), sql);
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, DB: db };
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

	it("a redelivered delivery or open writes no key, and reads none", async () => {
		const open = { event: "open", email: "reader@example.com", timestamp: 1767225600 };
		await postCallback(open);
		const kv = countingKv();
		await postCallback(open, { env: kv.env });
		expect((await env.SUPPRESSIONS.list()).keys).toEqual([]);
		expect(kv.counts).toMatchObject({ get: 0, put: 0, delete: 0 });
	});

	it("its redelivered soft bounces write the key of the entry they made", async () => {
		// Three soft bounces in the window suppress; none of them is evidence of its own.
		const soft = [3, 2, 1].map((days) => ({
			event: "bounce",
			bounceType: "soft_bounce",
			email: "soft-lost@example.com",
			timestamp: daysAgo(days),
		}));
		expect((await postCallback(soft, { env: envLosingFirstBatchAnswer() })).status).toBe(503);
		expect((await lookup("soft-lost@example.com", "?consistent=true")).suppressed).toBe(true);

		expect(await (await postCallback(soft)).json()).toMatchObject({ stored: 0, duplicates: 3 });
		expect(await env.SUPPRESSIONS.get("s:soft-lost@example.com")).not.toBeNull();
		expect((await lookup("soft-lost@example.com")).suppressed).toBe(true);
	});

	it("its redelivery of more addresses than one request writes leaves none deliverable", async () => {
		const count = EDGE_SYNC_AT_ONCE + 1;
		const bounces = Array.from({ length: count }, (_, i) => ({
			...bounce,
			email: `r${i}@example.com`,
		}));
		// A callback of so many events needs the setting raised from its default of 100.
		const many = { MAX_EVENTS_PER_REQUEST: "1000" };
		const losing = { ...envLosingFirstBatchAnswer(), ...many };
		expect((await postCallback(bounces, { env: losing })).status).toBe(503);

		const again = await postCallback(bounces, { env: { ...env, ...many } });
		expect(await again.json()).toMatchObject({ duplicates: count });
		// Another isolate, with no memo of the mark, decides from KV what KV can tell.
		const response = await call(
			"/v1/suppressions/check",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.lookup}` },
				body: JSON.stringify({ emails: bounces.map((event) => event.email) }),
			},
			countingKv().env,
		);
		expect(await response.json()).toMatchObject({ suppressedCount: count, deliverableCount: 0 });
	});
});

describe("a PUT whose write committed but whose answer D1 lost", () => {
	it("fails, and the operator's retry writes the KV key the failed PUT never wrote", async () => {
		const email = "operator-put@example.com";
		const put = (testEnv?: Env) =>
			call(
				`/v1/suppressions/${email}`,
				{
					method: "PUT",
					headers: { authorization: `Bearer ${tokens.admin}` },
					body: JSON.stringify({ list: "manual", reason: "asked by phone" }),
				},
				testEnv,
			);
		expect((await put(envLosingFirstAnswerOf("INSERT INTO suppressions"))).status).toBe(500);
		expect((await lookup(email, "?consistent=true")).suppressed).toBe(true);

		expect((await put()).status).toBe(200);
		expect(await env.SUPPRESSIONS.get(`s:${email}`)).not.toBeNull();
		expect((await lookup(email)).suppressed).toBe(true);
	});
});

describe("an import whose batch committed but whose answer D1 lost", () => {
	it("fails, and the operator's retry writes the KV keys the failed import never wrote", async () => {
		const body = [
			"email,list,scope,reason,source,created_at,updated_at,expires_at",
			"imported-a@example.com,manual,*,,api,,,",
			"imported-b@example.com,complaint,*,,event,,,",
		].join("\n");
		const post = (testEnv?: Env) =>
			call(
				"/v1/suppressions/import",
				{
					method: "POST",
					headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "text/csv" },
					body,
				},
				testEnv,
			);
		expect((await post(envLosingFirstBatchAnswer())).status).toBe(500);
		expect((await lookup("imported-a@example.com", "?consistent=true")).suppressed).toBe(true);

		// Idempotent: the retry changes nothing in D1, but brings KV up to what D1 holds.
		expect(await (await post()).json()).toEqual({ imported: 0, unchanged: 2, failed: [] });
		for (const email of ["imported-a@example.com", "imported-b@example.com"]) {
			expect(await env.SUPPRESSIONS.get(`s:${email}`)).not.toBeNull();
			expect((await lookup(email)).suppressed).toBe(true);
		}
	});

	it("of more addresses than one request writes: the retry, which changes none, marks KV as lagging", async () => {
		const emails = Array.from({ length: EDGE_SYNC_AT_ONCE + 1 }, (_, i) => `many${i}@example.com`);
		const body = [
			"email,list,scope,reason,source,created_at,updated_at,expires_at",
			...emails.map((email) => `${email},manual,*,,api,,,`),
		].join("\n");
		const post = (testEnv?: Env) =>
			call(
				"/v1/suppressions/import",
				{
					method: "POST",
					headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "text/csv" },
					body,
				},
				testEnv,
			);
		expect((await post(envLosingFirstBatchAnswer())).status).toBe(500);
		expect(await (await post()).json()).toEqual({
			imported: 0,
			unchanged: EDGE_SYNC_AT_ONCE + 1,
			failed: [],
		});
		// One address is left to the cron; until it writes the key, lookups read D1 for it.
		const unwritten = [];
		for (const email of emails) {
			if ((await env.SUPPRESSIONS.get(`s:${email}`)) === null) unwritten.push(email);
		}
		expect(unwritten).toHaveLength(1);
		expect((await lookup(unwritten[0] as string)).suppressed).toBe(true);
	});
});
