import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { countRows, docSamples, envWithFailingSql, postCallback, resetDatabase } from "../helpers";

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
		["an empty body", ""],
		["white space only", "  \n"],
		["a trailing comma", '{"event":"open",}'],
		["single quotes", "{'event':'open'}"],
	])("bad JSON: %s", async (_name, raw) => {
		await expectRefused(await postCallback(raw), 400, "invalid_json");
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
		expect(body.error.issues).toEqual([
			{ index: 1, path: "event", message: expect.stringMatching(/^must be one of /) },
			{ index: 1, path: "timestamp", message: expect.stringMatching(/^must be Unix seconds/) },
			{ index: 2, path: "email", message: "must contain @" },
			{ index: 2, path: "bounceType", message: expect.stringMatching(/^must be one of /) },
		]);
		const rejected = await lastRejected();
		expect(JSON.parse(rejected?.issues ?? "[]")).toEqual(body.error.issues);
	});

	it("a single invalid event has issues without an index", async () => {
		const { email, ...noEmail } = base;
		const body = await expectRefused(await postCallback(noEmail), 400, "invalid_event");
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
