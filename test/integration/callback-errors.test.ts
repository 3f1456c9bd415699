import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { deleteRejectedBefore } from "../../src/events/retention-store";
import {
	call,
	countRows,
	docSamples,
	envWithFailingSql,
	postCallback,
	resetDatabase,
	tokens,
} from "../helpers";

type ErrorBody = { error: { code: string; message: string; issues?: Record<string, unknown>[] } };

const base = { event: "delivered", email: "someone@example.com", timestamp: 1767225600 };

interface RejectedRow {
	status: number;
	code: string;
	issues: string | null;
	content_type: string | null;
	/** D1 returns a BLOB as an array of bytes. */
	body: number[];
	body_bytes: number;
}

async function lastRejected(): Promise<RejectedRow | null> {
	return env.DB.prepare(
		"SELECT * FROM rejected_callbacks ORDER BY received_at DESC LIMIT 1",
	).first<RejectedRow>();
}

async function expectRefused(response: Response, status: number, code: string): Promise<ErrorBody> {
	expect(response.status).toBe(status);
	expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
	const body = (await response.json()) as ErrorBody;
	expect(body.error.code).toBe(code);
	expect(typeof body.error.message).toBe("string");
	expect(await countRows("events")).toBe(0);
	return body;
}

beforeEach(resetDatabase);

describe("refused callbacks store no event and are recorded", () => {
	it("bad JSON: 400 invalid_json, raw body kept", async () => {
		const raw = '{"event":"delivered","email":';
		await expectRefused(
			await postCallback(raw, { headers: { "content-type": "text/plain" } }),
			400,
			"invalid_json",
		);
		const rejected = await lastRejected();
		expect(rejected).toMatchObject({
			status: 400,
			code: "invalid_json",
			content_type: "text/plain",
			body_bytes: raw.length,
		});
		expect(new TextDecoder().decode(new Uint8Array(rejected?.body ?? []))).toBe(raw);
	});

	it.each([
		["an empty body", "", /^The body is empty$/],
		["white space only", "  \n", /^The body is empty$/],
		["a trailing comma", '{"event":"open",}', /^The body is not valid JSON: ./],
		["single quotes", "{'event':'open'}", /^The body is not valid JSON: ./],
	])("bad JSON: %s", async (_name, raw, message) => {
		const body = await expectRefused(await postCallback(raw), 400, "invalid_json");
		expect(body.error.message).toMatch(message);
		expect(await countRows("rejected_callbacks")).toBe(1);
	});

	it("bad UTF-8: 400 invalid_json, the exact bytes kept", async () => {
		const prefix = new TextEncoder().encode(
			'{"event":"delivered","email":"a@example.com","timestamp":1,"reason":"',
		);
		const bytes = new Uint8Array([...prefix, 0xff, 0xfe, 0x22, 0x7d]);
		const body = await expectRefused(await postCallback(bytes), 400, "invalid_json");
		expect(body.error.message).toBe("The body is not valid UTF-8");
		expect(new Uint8Array((await lastRejected())?.body ?? [])).toEqual(bytes);
	});

	it("a lone surrogate: 400 invalid_event", async () => {
		const body = await expectRefused(
			await postCallback(
				'{"event":"open","email":"a@example.com","timestamp":1,"reason":"\\ud800"}',
			),
			400,
			"invalid_event",
		);
		expect(body.error.issues).toEqual([
			{ path: "reason", message: "must be well-formed Unicode (no lone surrogates)" },
		]);
	});

	it("invalid events: every problem with its path, and the index within an array", async () => {
		const response = await postCallback([
			base,
			{ ...base, event: "bogus", timestamp: -1 },
			{ ...base, email: "nope", bounceType: "medium" },
		]);
		const body = await expectRefused(response, 400, "invalid_event");
		expect(body.error.message).toBe("The callback has 4 problems");
		expect(body.error.issues).toEqual([
			{ index: 1, path: "event", message: expect.stringMatching(/^must be one of /) },
			{ index: 1, path: "timestamp", message: expect.stringMatching(/^must be Unix seconds/) },
			{ index: 2, path: "email", message: "must contain @" },
			{ index: 2, path: "bounceType", message: expect.stringMatching(/^must be one of /) },
		]);
		const rejected = await lastRejected();
		expect(JSON.parse(rejected?.issues ?? "[]")).toEqual(body.error.issues);
	});

	it("counts every problem in its message when it lists only the first 100", async () => {
		const bad = { event: "x", email: "nope", timestamp: -1 };
		const body = await expectRefused(
			await postCallback(Array.from({ length: 50 }, () => bad)),
			400,
			"invalid_event",
		);
		expect(body.error.message).toBe("The callback has 150 problems (the first 100 listed)");
		expect(body.error.issues).toHaveLength(100);
	});

	it("names a custom header that is not well-formed Unicode once, for what is wrong", async () => {
		const body = await expectRefused(
			await postCallback({ ...base, "X-Tencentcloudses-Cb-A": "\ud800" }),
			400,
			"invalid_event",
		);
		expect(body.error.issues).toEqual([
			{ path: "X-Tencentcloudses-Cb-A", message: expect.stringMatching(/well-formed Unicode/) },
		]);
	});

	it("an array of one invalid event has issues with its index, as any array", async () => {
		const { email, ...noEmail } = base;
		const body = await expectRefused(await postCallback([noEmail]), 400, "invalid_event");
		expect(body.error.issues).toEqual([{ path: "email", message: "is required", index: 0 }]);
	});

	it("a single invalid event has issues without an index", async () => {
		const { email, ...noEmail } = base;
		const body = await expectRefused(await postCallback(noEmail), 400, "invalid_event");
		expect(body.error.message).toBe("The callback has 1 problem");
		expect(body.error.issues).toEqual([{ path: "email", message: "is required" }]);
	});

	it.each([
		["negative", -1],
		["fractional", 1.5],
		["milliseconds", 1767225600000],
		["huge", 1e300],
		["non-numeric", "yesterday"],
		["empty", ""],
		["a boolean", true],
	])("timestamp %s is refused", async (_name, timestamp) => {
		const body = await expectRefused(
			await postCallback({ ...base, timestamp }),
			400,
			"invalid_event",
		);
		expect(body.error.issues?.[0]?.path).toBe("timestamp");
	});

	it.each([
		["in milliseconds", 1767225600000],
		["after 9999-12-31T23:59:59Z", 253402300800],
	])("sentTimestamp %s is refused", async (_name, sentTimestamp) => {
		const body = await expectRefused(
			await postCallback({ ...base, sentTimestamp }),
			400,
			"invalid_event",
		);
		expect(body.error.issues?.map((issue) => issue.path)).toEqual(["sentTimestamp"]);
	});

	it.each([
		["a string", '"hello"'],
		["a number", "42"],
		["null", "null"],
		["an array of numbers", "[1,2]"],
		["an empty array", "[]"],
	])("a body that is %s: 400 invalid_event", async (_name, raw) => {
		await expectRefused(await postCallback(raw), 400, "invalid_event");
	});

	it("too many events: 400 invalid_event naming the limit", async () => {
		const many = Array.from({ length: 101 }, (_, i) => ({ ...base, timestamp: i }));
		const body = await expectRefused(await postCallback(many), 400, "invalid_event");
		expect(body.error.issues).toEqual([
			{ path: "", message: "must hold 1 to 100 events, holds 101" },
		]);
	});

	it("exactly the limit is accepted", async () => {
		const hundred = Array.from({ length: 100 }, (_, i) => ({ ...base, timestamp: i }));
		const response = await postCallback(hundred);
		expect(await response.json()).toEqual({ ok: true, received: 100, stored: 100, duplicates: 0 });
	});

	it("MAX_EVENTS_PER_REQUEST changes the limit", async () => {
		const small = { ...env, MAX_EVENTS_PER_REQUEST: "2" };
		const body = await expectRefused(
			await postCallback([base, base, base], { env: small }),
			400,
			"invalid_event",
		);
		expect(body.error.issues?.[0]?.message).toBe("must hold 1 to 2 events, holds 3");
	});

	it("a body over 256 KiB: 413, the first 64 KiB kept", async () => {
		const huge = JSON.stringify({ ...base, reason: "x".repeat(256 * 1024) });
		await expectRefused(await postCallback(huge), 413, "payload_too_large");
		const rejected = await lastRejected();
		expect(rejected?.status).toBe(413);
		expect(rejected?.body.length).toBe(64 * 1024);
		expect(rejected?.body_bytes).toBeGreaterThan(256 * 1024);
	});

	it("long field names are cut in the issues, so a refusal stores little more than 64 KiB", async () => {
		const fields = Object.fromEntries(
			Array.from({ length: 50 }, (_, i) => [
				`X-Tencentcloudses-Cb-${String(i).padStart(3, "0")}${"n".repeat(5000)}`,
				{ nested: [1] },
			]),
		);
		const response = await postCallback({ ...base, ...fields });
		const body = await expectRefused(response, 400, "invalid_event");
		expect(body.error.issues).toHaveLength(50);
		for (const issue of body.error.issues ?? []) {
			expect(String(issue.path)).toHaveLength(201);
			expect(String(issue.path).endsWith("…")).toBe(true);
		}
		const rejected = await lastRejected();
		expect(rejected?.issues?.length).toBeLessThan(16 * 1024);
		// A cut never splits an emoji (two UTF-16 units) in half.
		const emoji = { [`X-Tencentcloudses-Cb-${"a".repeat(178)}${"😀".repeat(20)}`]: 1 };
		const split = await expectRefused(
			await postCallback({ ...base, ...emoji }),
			400,
			"invalid_event",
		);
		const path = String(split.error.issues?.[0]?.path);
		expect(path.isWellFormed()).toBe(true);
		expect(path.endsWith("…")).toBe(true);
	});

	it("a field name of 200 characters is kept whole in an issue, and a cut keeps an emoji that ends at the limit", async () => {
		const name = `X-Tencentcloudses-Cb-${"n".repeat(179)}`;
		expect(name).toHaveLength(200);
		const whole = await expectRefused(
			await postCallback({ ...base, [name]: 1 }),
			400,
			"invalid_event",
		);
		expect(whole.error.issues?.map((issue) => issue.path)).toEqual([name]);
		// The emoji's two UTF-16 units are the 199th and 200th characters.
		const emoji = `X-Tencentcloudses-Cb-${"a".repeat(177)}${"😀".repeat(20)}`;
		const cut = await expectRefused(
			await postCallback({ ...base, [emoji]: 1 }),
			400,
			"invalid_event",
		);
		expect(emoji.slice(0, 200).endsWith("😀")).toBe(true);
		const path = String(cut.error.issues?.[0]?.path);
		// Checked first: a failure that printed a lone surrogate would break the test runner's report.
		expect(path.isWellFormed()).toBe(true);
		expect(path).toBe(`${emoji.slice(0, 200)}…`);
	});

	it("a body one byte over 256 KiB is refused, and a far larger one is recorded at its full size", async () => {
		const event = JSON.stringify({ ...base, reason: "" });
		// The padding makes the body exactly 256 KiB + 1 bytes.
		const over = event.replace(
			'"reason":""',
			`"reason":"${"x".repeat(256 * 1024 + 1 - event.length)}"`,
		);
		expect(new TextEncoder().encode(over).byteLength).toBe(256 * 1024 + 1);
		await expectRefused(await postCallback(over), 413, "payload_too_large");
		expect((await lastRejected())?.body_bytes).toBe(256 * 1024 + 1);
		await resetDatabase();
		// Reading stops soon after the limit; the size recorded is the whole body's, as declared.
		const huge = JSON.stringify({ ...base, reason: "x".repeat(4 * 1024 * 1024) });
		const declared = { "content-length": String(huge.length) };
		await expectRefused(await postCallback(huge, { headers: declared }), 413, "payload_too_large");
		const rejected = await lastRejected();
		expect(rejected?.body_bytes).toBe(huge.length);
		expect(rejected?.body.length).toBe(64 * 1024);
	});

	it("a body declared larger than 256 KiB is refused whatever it holds, at its declared size", async () => {
		const declared = { "content-length": String(256 * 1024 + 1) };
		await expectRefused(await postCallback(base, { headers: declared }), 413, "payload_too_large");
		expect((await lastRejected())?.body_bytes).toBe(256 * 1024 + 1);
	});

	it("a body of exactly 256 KiB is read, whether or not its length is declared", async () => {
		const event = JSON.stringify({ ...base, extraText: "" });
		const exact = event.replace(
			'"extraText":""',
			`"extraText":"${"x".repeat(256 * 1024 - event.length)}"`,
		);
		expect(new TextEncoder().encode(exact).byteLength).toBe(256 * 1024);
		expect((await postCallback(exact)).status).toBe(200);
		await resetDatabase();
		const declared = { "content-length": String(256 * 1024) };
		expect((await postCallback(exact, { headers: declared })).status).toBe(200);
	});

	it("a body over 256 KiB is refused even when it declares a smaller length", async () => {
		const over = JSON.stringify({ ...base, extraText: "x".repeat(256 * 1024) });
		const declared = { "content-length": "100" };
		await expectRefused(await postCallback(over, { headers: declared }), 413, "payload_too_large");
	});

	it("an endless upload is read only just past 256 KiB, then cancelled", async () => {
		let chunks = 0;
		let cancelled = false;
		const chunk = new Uint8Array(64 * 1024).fill(0x20);
		const body = new ReadableStream<Uint8Array>({
			pull(controller) {
				chunks++;
				controller.enqueue(chunk);
			},
			cancel() {
				cancelled = true;
			},
		});
		const path = `/v1/callbacks/tencent/${tokens.callback}`;
		await expectRefused(await call(path, { method: "POST", body }), 413, "payload_too_large");
		expect(cancelled).toBe(true);
		// Four chunks make 256 KiB, a fifth goes past it; the stream may have queued one more.
		expect(chunks).toBeGreaterThanOrEqual(5);
		expect(chunks).toBeLessThanOrEqual(6);
	});

	it("a body just under 256 KiB is read", async () => {
		const big = JSON.stringify({ ...base, extraText: "x".repeat(250 * 1024) });
		expect((await postCallback(big)).status).toBe(200);
	});

	it("a refusal that cannot be recorded answers 503, so that it is retried, not lost", async () => {
		const failing = envWithFailingSql("rejected_callbacks");
		const unknownKind = JSON.stringify({ ...base, event: "reject" });
		for (const body of ["{", unknownKind]) {
			const response = await postCallback(body, { env: failing });
			await expectRefused(response, 503, "storage_unavailable");
			expect(response.headers.get("retry-after")).toBe("30");
		}
		expect(await countRows("rejected_callbacks")).toBe(0);
		expect(await countRows("events")).toBe(0);
		// Tencent's retry, once D1 takes writes again, is refused and recorded.
		await expectRefused(await postCallback(unknownKind), 400, "invalid_event");
		expect((await lastRejected())?.code).toBe("invalid_event");
	});
});

describe("the storage refused callbacks keep is bounded by MAX_REJECTED_MIB", () => {
	const capped = { ...env, MAX_REJECTED_MIB: "1" };
	/** A refused body of 70,000 bytes (64 KiB of it kept), numbered so that each is distinct. */
	const bigBadBody = (i: number) => `{"n":${i},"pad":"${"x".repeat(70_000)}"`;

	async function storedBytes(): Promise<{ total: number; sum: number }> {
		const row = await env.DB.prepare(
			`SELECT (SELECT bytes FROM rejected_storage) AS total,
			(SELECT coalesce(sum(200 + length(body) + length(CAST(message AS BLOB))
				+ coalesce(length(CAST(issues AS BLOB)), 0)
				+ coalesce(length(CAST(content_type AS BLOB)), 0)), 0) FROM rejected_callbacks) AS sum`,
		).first<{ total: number; sum: number }>();
		return { total: row?.total ?? -1, sum: row?.sum ?? -1 };
	}

	/** Bytes of the local D1 database file. */
	async function databaseBytes(): Promise<number> {
		return (await env.DB.prepare("SELECT 1").run()).meta.size_after;
	}

	it("records refusals up to the bound, then answers 503 with Retry-After and records nothing", async () => {
		// 1 MiB holds 15 records of 65,536 bytes, their messages and 200 bytes each; the 16th
		// starts below the bound and passes it, so the 17th finds the table full.
		for (let i = 0; i < 16; i++) {
			await expectRefused(await postCallback(bigBadBody(i), { env: capped }), 400, "invalid_json");
		}
		expect(await countRows("rejected_callbacks")).toBe(16);
		const full = await postCallback(bigBadBody(16), { env: capped });
		await expectRefused(full, 503, "storage_unavailable");
		expect(full.headers.get("retry-after")).toBe("30");
		expect(await countRows("rejected_callbacks")).toBe(16);
		// A small refusal is turned away too: the bound is on what is kept, not on one body.
		await expectRefused(await postCallback("{", { env: capped }), 503, "storage_unavailable");
		// Valid callbacks are not touched by the bound.
		const valid = await postCallback(base, { env: capped });
		expect(valid.status).toBe(200);
		expect(await countRows("events")).toBe(1);
		await env.DB.prepare("DELETE FROM events").run();
		// Without the bound (the default, 1 GiB) the same refusal is recorded.
		await expectRefused(await postCallback(bigBadBody(16)), 400, "invalid_json");
		expect(await countRows("rejected_callbacks")).toBe(17);
	});

	it("frees what retention deletes, so refusals are recorded again", async () => {
		for (let i = 0; i < 17; i++) await postCallback(bigBadBody(i), { env: capped });
		expect(await countRows("rejected_callbacks")).toBe(16);
		const cutoff = Math.floor(Date.now() / 1000) + 1;
		expect(await deleteRejectedBefore(env.DB, cutoff, 2)).toBe(2);
		await expectRefused(await postCallback(bigBadBody(17), { env: capped }), 400, "invalid_json");
		expect(await countRows("rejected_callbacks")).toBe(15);
	});

	it("counts at least what the database grows by, for the smallest refusal", async () => {
		const before = { total: (await storedBytes()).total, size: await databaseBytes() };
		for (let i = 0; i < 2000; i++) await postCallback(new Uint8Array(0));
		expect(await countRows("rejected_callbacks")).toBe(2000);
		const counted = (await storedBytes()).total - before.total;
		const grown = (await databaseBytes()) - before.size;
		expect(grown).toBeGreaterThan(2000 * 100);
		expect(counted).toBeGreaterThanOrEqual(grown);
	});

	it("keeps at most 256 characters of a refused request's Content-Type", async () => {
		const contentType = `text/plain; x=${"y".repeat(100_000)}`;
		await postCallback("{", { headers: { "content-type": contentType } });
		expect((await lastRejected())?.content_type).toBe(contentType.slice(0, 256));
	});

	it("keeps a running total equal to the bytes the records keep", async () => {
		expect(await storedBytes()).toEqual({ total: 0, sum: 0 });
		await postCallback(bigBadBody(1), { headers: { "content-type": "text/plain" } });
		await postCallback({ event: "nonsense", email: "x", timestamp: "soon" });
		await postCallback("[]");
		const after = await storedBytes();
		// Each record keeps its body, its message, and the invalid_event's issues.
		expect(after.total).toBeGreaterThan(65_536 + 200);
		expect(after.total).toBe(after.sum);
		const one = await env.DB.prepare(
			"SELECT kept_bytes, length(body) AS body FROM rejected_callbacks WHERE content_type = 'text/plain'",
		).first<{ kept_bytes: number; body: number }>();
		expect(one?.body).toBe(65_536);
		expect(one?.kept_bytes).toBe(200 + 65_536 + "text/plain".length + (await lastMessageBytes()));
		await env.DB.prepare(
			"UPDATE rejected_callbacks SET replayed_at = 1, issues = NULL WHERE code = 'invalid_event'",
		).run();
		const updated = await storedBytes();
		expect(updated.total).toBe(updated.sum);
		expect(updated.total).toBeLessThan(after.total);
		await env.DB.prepare("DELETE FROM rejected_callbacks").run();
		expect(await storedBytes()).toEqual({ total: 0, sum: 0 });
	});
});

/** UTF-8 bytes of the message of the refused text/plain body. */
async function lastMessageBytes(): Promise<number> {
	const row = await env.DB.prepare(
		"SELECT message FROM rejected_callbacks WHERE content_type = 'text/plain'",
	).first<{ message: string }>();
	return new TextEncoder().encode(row?.message ?? "").byteLength;
}

describe("not recorded", () => {
	it("a wrong token: 404 exactly like an unknown path", async () => {
		const response = await postCallback(docSamples[0], { token: "wrong-token-wrong-token" });
		expect(await expectRefused(response, 404, "not_found")).toEqual({
			error: { code: "not_found", message: "No such resource" },
		});
		expect(await countRows("rejected_callbacks")).toBe(0);
	});

	it("a prefix of the token does not pass", async () => {
		const prefix = env.CALLBACK_TOKENS.slice(0, -1);
		expect((await postCallback(docSamples[0], { token: prefix })).status).toBe(404);
		expect((await postCallback(docSamples[0], { token: `${env.CALLBACK_TOKENS}x` })).status).toBe(
			404,
		);
	});

	it("no CALLBACK_TOKENS: 503 not_configured naming it", async () => {
		const { CALLBACK_TOKENS, ...rest } = env;
		const body = await expectRefused(
			await postCallback(docSamples[0], { env: rest as Env }),
			503,
			"not_configured",
		);
		expect(body.error.message).toContain("CALLBACK_TOKENS");
	});

	it("a bad MAX_EVENTS_PER_REQUEST: 503 not_configured naming it", async () => {
		const bad = { ...env, MAX_EVENTS_PER_REQUEST: "lots" };
		const body = await expectRefused(
			await postCallback(docSamples[0], { env: bad }),
			503,
			"not_configured",
		);
		expect(body.error.message).toContain("MAX_EVENTS_PER_REQUEST");
	});

	it("a token too short to be a secret: 503 not_configured, the value never shown", async () => {
		const weak = { ...env, CALLBACK_TOKENS: "abc" };
		const body = await expectRefused(
			await postCallback(docSamples[0], { token: "abc", env: weak }),
			503,
			"not_configured",
		);
		expect(body.error.message).toContain("CALLBACK_TOKENS");
		expect(body.error.message).not.toContain("abc");
	});
});
