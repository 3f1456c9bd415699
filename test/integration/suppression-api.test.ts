import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { applyEvidence } from "../../src/suppressions/evidence-store";
import {
	call,
	countingKv,
	entriesOf,
	lookup,
	postCallback,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

type Json = Record<string, unknown>;
type ErrorBody = { error: { code: string; message: string; issues?: Json[] } };

function send(
	method: string,
	path: string,
	options: { body?: unknown; token?: string | null; env?: Env } = {},
): Promise<Response> {
	const token = options.token === undefined ? tokens.admin : options.token;
	return call(
		path,
		{
			method,
			headers: token === null ? {} : { authorization: `Bearer ${token}` },
			body: options.body === undefined ? undefined : JSON.stringify(options.body),
		},
		options.env,
	);
}

async function check(emails: unknown[], fromDomain?: string, testEnv?: Env) {
	const response = await send("POST", "/v1/suppressions/check", {
		body: { emails, ...(fromDomain ? { fromDomain } : {}) },
		token: tokens.lookup,
		...(testEnv ? { env: testEnv } : {}),
	});
	expect(response.status).toBe(200);
	return (await response.json()) as {
		results: Json[];
		deliverableCount: number;
		suppressedCount: number;
		invalidCount: number;
	};
}

beforeEach(async () => {
	await resetDatabase();
	const response = await postCallback([
		{
			event: "bounce",
			bounceType: "hard_bounce",
			email: "bounced@example.com",
			timestamp: 1000,
			reason: "550 no such user",
		},
		{
			event: "unsubscribe",
			email: "unsub@example.com",
			timestamp: 1000,
			fromDomain: "news.example.com",
		},
		{ event: "spamreport", email: "spam@example.com", timestamp: 1000 },
	]);
	expect(response.status).toBe(200);
});

describe("GET /v1/suppressions/{email}", () => {
	it("answers 200 suppressed:false for an unknown address, never 404", async () => {
		expect(await lookup("nobody@example.com")).toEqual({
			email: "nobody@example.com",
			suppressed: false,
			entries: [],
		});
	});

	it("normalises the address in the path", async () => {
		const found = await lookup("  Bounced@EXAMPLE.com ");
		expect(found.email).toBe("bounced@example.com");
		expect(found.suppressed).toBe(true);
	});

	it.each([
		["no at sign", "not-an-address", "must contain @"],
		["bad percent-encoding", "%E0%A4%A", "must be validly URL-encoded"],
	])("refuses %s with 400 invalid_email and the issue", async (_name, raw, message) => {
		const response = await send("GET", `/v1/suppressions/${raw}`, { token: tokens.lookup });
		expect(response.status).toBe(400);
		expect(((await response.json()) as ErrorBody).error).toEqual({
			code: "invalid_email",
			message: expect.stringMatching(/^The address /),
			issues: [{ path: "email", message }],
		});
	});

	it("refuses unknown query parameters and bad values", async () => {
		for (const query of ["?consistent=yes", "?fromDomain=", "?colour=red"]) {
			const response = await send("GET", `/v1/suppressions/a%40example.com${query}`, {
				token: tokens.lookup,
			});
			expect(response.status).toBe(400);
			expect(((await response.json()) as ErrorBody).error.code).toBe("invalid_query");
		}
	});

	it("falls back to D1 when KV fails", async () => {
		const kv = countingKv({ get: true });
		const found = await lookup("bounced@example.com", "", kv.env);
		expect(kv.counts.get).toBe(1);
		expect(found.suppressed).toBe(true);
	});

	it("reads KV, which may lag D1: consistent=true reads D1", async () => {
		await env.SUPPRESSIONS.delete("s:bounced@example.com");
		expect((await lookup("bounced@example.com")).suppressed).toBe(false);
		expect((await lookup("bounced@example.com", "?consistent=true")).suppressed).toBe(true);
	});
});

/** JSON with every character beyond ASCII escaped as \uXXXX, as Python's json.dumps writes it. */
function asciiJson(value: unknown): string {
	return JSON.stringify(value).replace(
		/[\u0080-\uffff]/g,
		(char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
	);
}

describe("POST /v1/suppressions/check", () => {
	it("takes 1000 of the longest addresses with every character escaped", async () => {
		const longest = `${"中".repeat(64)}@${"中".repeat(63)}.${"中".repeat(63)}.${"中".repeat(61)}`;
		expect(longest).toHaveLength(254);
		const body = asciiJson({ emails: Array.from({ length: 1000 }, () => longest) });
		expect(body.length).toBeGreaterThan(1.5e6);
		const response = await call("/v1/suppressions/check", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
			body,
		});
		expect(response.status).toBe(200);
		expect(await response.json()).toMatchObject({ deliverableCount: 1000, invalidCount: 0 });
	});

	it("checks 1000 addresses in one request, in order, mixing suppressed, deliverable and invalid", async () => {
		const emails = Array.from({ length: 1000 }, (_, i) => `user${i}@example.com`);
		emails[0] = "Bounced@Example.com";
		emails[500] = "unsub@example.com";
		emails[998] = "not an address";
		emails[999] = "spam@example.com";
		const kv = countingKv();
		const body = await check(emails, "news.example.com", kv.env);
		expect(body.results).toHaveLength(1000);
		expect(body.results[0]).toEqual({
			email: "Bounced@Example.com",
			normalized: "bounced@example.com",
			deliverable: false,
			suppressed: true,
			lists: ["bounce"],
		});
		expect(body.results[1]).toEqual({
			email: "user1@example.com",
			normalized: "user1@example.com",
			deliverable: true,
			suppressed: false,
			lists: [],
		});
		expect(body.results[500]).toMatchObject({ suppressed: true, lists: ["unsubscribe"] });
		expect(body.results[998]).toEqual({
			email: "not an address",
			normalized: "not an address",
			invalid: true,
			deliverable: false,
		});
		expect(body.results[999]).toMatchObject({ suppressed: true, lists: ["complaint"] });
		expect(body).toMatchObject({ deliverableCount: 996, suppressedCount: 3, invalidCount: 1 });
		// 999 valid addresses in bulk gets of 100, and the lag mark (edge-lag.ts), which an isolate
		// reads at most every 30 seconds.
		expect(kv.counts.get).toBe(11);
	});

	it("reads no key for an invalid address", async () => {
		const emails = Array.from({ length: 100 }, (_, i) => `user${i}@example.com`);
		const kv = countingKv();
		const body = await check([...emails, "not an address"], undefined, kv.env);
		expect(body).toMatchObject({ deliverableCount: 100, invalidCount: 1 });
		expect(kv.counts.get).toBe(2); // one bulk get of 100 keys, and the lag mark
	});

	it("names each list once, however many of its entries apply", async () => {
		await send("PUT", "/v1/suppressions/twice%40example.com", { body: { list: "manual" } });
		await send("PUT", "/v1/suppressions/twice%40example.com", {
			body: { list: "manual", scope: "shop.example.com" },
		});
		const body = await check(["twice@example.com"], "shop.example.com");
		expect(body.results[0]).toMatchObject({ suppressed: true, lists: ["manual"] });
	});

	it("reads KV for a batch mixing short addresses with one longer than 166 characters", async () => {
		const long = `${"a".repeat(64)}@${"b".repeat(63)}.${"c".repeat(63)}.example.com`;
		expect(long.length).toBeGreaterThan(166);
		expect((await send("PUT", `/v1/suppressions/${long}`)).status).toBe(200);
		// KV lags D1 for this address: the answer shows which one was read.
		await env.SUPPRESSIONS.delete("s:bounced@example.com");
		const body = await check(["bounced@example.com", long]);
		expect(body.results[0]).toMatchObject({ suppressed: false });
		expect(body.results[1]).toMatchObject({ normalized: long, suppressed: true });
	});

	it("scopes by fromDomain", async () => {
		expect((await check(["unsub@example.com"], "shop.example.com")).results[0]).toMatchObject({
			deliverable: true,
		});
		expect((await check(["unsub@example.com"])).results[0]).toMatchObject({ deliverable: false });
	});

	it("falls back to D1 when KV bulk gets fail", async () => {
		const kv = countingKv({ get: true });
		const body = await check(["bounced@example.com", "fine@example.com"], undefined, kv.env);
		expect(body).toMatchObject({ suppressedCount: 1, deliverableCount: 1 });
	});

	it("read from D1, an entry with an expiry suppresses until it expires, and not after", async () => {
		const expiresAt = Date.now() + 86_400_000;
		const put = await send("PUT", "/v1/suppressions/soon%40example.com", {
			body: { expiresAt: new Date(expiresAt).toISOString() },
		});
		expect(put.status).toBe(200);
		const kv = countingKv({ get: true });
		expect((await check(["soon@example.com"], undefined, kv.env)).results[0]).toMatchObject({
			suppressed: true,
			lists: ["manual"],
		});
		// The one bulk get failed (and so did the read of the lag mark): D1 answered.
		expect(kv.counts.get).toBe(2);
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(expiresAt + 1000);
			expect((await check(["soon@example.com"], undefined, kv.env)).results[0]).toMatchObject({
				deliverable: true,
				lists: [],
			});
		} finally {
			vi.useRealTimers();
		}
	});

	it.each([
		["an object", '{"entries":[]}'],
		["null", "null"],
		["a number", "42"],
		["another string", '"x"'],
		["an empty string", '""'],
		["no JSON at all", ""],
		["an array of numbers", "[1]"],
		["an array holding null", "[null]"],
		["an entry without its expiry", '[{"list":"bounce","scope":"*"}]'],
		["an entry with an unreadable expiry", '[{"list":"bounce","scope":"*","expiresAt":"soon"}]'],
		["an entry of no known list", '[{"list":"Bounce","scope":"*","expiresAt":null}]'],
	])(
		"reads D1 for an address whose KV value is %s, never calling it deliverable",
		async (_name, value) => {
			await env.SUPPRESSIONS.put("s:bounced@example.com", value);
			const body = await check(["fine@example.com", "bounced@example.com"]);
			expect(body).toMatchObject({ deliverableCount: 1, suppressedCount: 1 });
			expect(body.results[1]).toMatchObject({ deliverable: false, lists: ["bounce"] });
			expect(await lookup("bounced@example.com")).toMatchObject({ suppressed: true });
		},
	);

	it.each([
		["no emails", {}],
		["an empty list", { emails: [] }],
		["too many", { emails: Array.from({ length: 1001 }, (_, i) => `a${i}@example.com`) }],
		["a number", { emails: [42] }],
		["not an array", { emails: "a@example.com" }],
		["a bad fromDomain", { emails: ["a@example.com"], fromDomain: "not a domain" }],
	])("refuses %s with 400 invalid_request", async (_name, body) => {
		const response = await send("POST", "/v1/suppressions/check", { body, token: tokens.lookup });
		expect(response.status).toBe(400);
		expect(((await response.json()) as ErrorBody).error.code).toBe("invalid_request");
	});

	it.each([
		["no emails", {}, "emails", "must be an array of 1 to 1000 addresses"],
		[
			"emails a string",
			{ emails: "a@example.com" },
			"emails",
			"must be an array of 1 to 1000 addresses",
		],
		[
			"fromDomain null",
			{ emails: ["a@example.com"], fromDomain: null },
			"fromDomain",
			"must be a domain name",
		],
		[
			"fromDomain a number",
			{ emails: ["a@example.com"], fromDomain: 5 },
			"fromDomain",
			"must be a domain name",
		],
	])("says what is wrong with %s", async (_name, body, path, message) => {
		const response = await send("POST", "/v1/suppressions/check", { body, token: tokens.lookup });
		expect(response.status).toBe(400);
		expect(((await response.json()) as ErrorBody).error.issues).toEqual([{ path, message }]);
	});

	it("refuses a body that is not JSON", async () => {
		const response = await call("/v1/suppressions/check", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
			body: "{",
		});
		expect(response.status).toBe(400);
		expect(((await response.json()) as ErrorBody).error.code).toBe("invalid_json");
	});
});

describe("API bodies are JSON objects, parsed plainly", () => {
	it.each(["12345678901234567891", "1e400", "42", "[]", '"x"', "null"])(
		"PUT /v1/suppressions/{email} with the body %s is refused, not read as {}",
		async (body) => {
			const response = await call("/v1/suppressions/whole%40example.com", {
				method: "PUT",
				headers: { authorization: `Bearer ${tokens.admin}` },
				body,
			});
			expect(response.status).toBe(400);
			expect(((await response.json()) as ErrorBody).error).toMatchObject({
				code: "invalid_request",
				issues: [{ path: "", message: "must be a JSON object" }],
			});
			expect(await entriesOf("whole@example.com")).toEqual([]);
		},
	);

	it.each([
		[
			"a misspelt field",
			'{"expires_at":"2030-01-01"}',
			"expires_at",
			"is not a field of this body",
		],
		["a lone surrogate in the reason", '{"reason":"x\\ud800y"}', "reason", "well-formed"],
		[
			"a lone surrogate in the scope",
			'{"list":"unsubscribe","scope":"a\\udc00.example"}',
			"scope",
			"",
		],
		["a reason over 4096 characters", `{"reason":"${"r".repeat(4097)}"}`, "reason", "4096"],
		["a reason that is not a string", '{"reason":5}', "reason", "must be a string or null"],
	])("PUT refuses %s and stores nothing", async (_name, body, path, message) => {
		const response = await call("/v1/suppressions/strict%40example.com", {
			method: "PUT",
			headers: { authorization: `Bearer ${tokens.admin}` },
			body,
		});
		expect(response.status).toBe(400);
		const error = ((await response.json()) as ErrorBody).error;
		expect(error.code).toBe("invalid_request");
		expect(error.issues?.[0]).toMatchObject({ path, message: expect.stringContaining(message) });
		expect(await entriesOf("strict@example.com")).toEqual([]);
	});

	// JSON.parse keeps a repeated name's last value and drops the others without a trace.
	it.each([
		["PUT", "expiresAt", '{"expiresAt":"2030-01-01T00:00:00Z","expiresAt":null}'],
		["PUT", "list", '{"list":"manual","list":"bounce"}'],
		[
			"POST",
			"fromDomain",
			'{"emails":["a@example.com"],"fromDomain":"a.com","fromDomain":"b.com"}',
		],
		["POST", "emails", '{"emails":["twice@example.com"],"emails":["a@example.com"]}'],
	])(
		"%s refuses a body naming %s twice, whichever value would pass",
		async (method, name, body) => {
			const response = await call(
				method === "PUT" ? "/v1/suppressions/twice%40example.com" : "/v1/suppressions/check",
				{
					method,
					headers: { authorization: `Bearer ${method === "PUT" ? tokens.admin : tokens.lookup}` },
					body,
				},
			);
			expect(response.status).toBe(400);
			const error = ((await response.json()) as ErrorBody).error;
			expect(error.code).toBe("invalid_json");
			expect(error.message).toContain(`"${name}" more than once`);
			expect(await entriesOf("twice@example.com")).toEqual([]);
		},
	);

	it("names a repeated member of 100 characters whole in its message", async () => {
		const name = "a".repeat(100);
		const response = await call("/v1/suppressions/twice%40example.com", {
			method: "PUT",
			headers: { authorization: `Bearer ${tokens.admin}` },
			body: `{"${name}":1,"${name}":2}`,
		});
		expect(response.status).toBe(400);
		const error = ((await response.json()) as ErrorBody).error;
		expect(error.message).toContain(`"${name}" more than once`);
	});

	it("POST /v1/suppressions/check refuses a misspelt field", async () => {
		const response = await send("POST", "/v1/suppressions/check", {
			body: { emails: ["a@example.com"], from_domain: "news.example.com" },
			token: tokens.lookup,
		});
		expect(response.status).toBe(400);
		expect(((await response.json()) as ErrorBody).error.issues).toEqual([
			{ path: "from_domain", message: "is not a field of this body" },
		]);
	});

	it("POST /v1/suppressions/check with an array is refused the same way", async () => {
		const response = await send("POST", "/v1/suppressions/check", {
			body: ["a@example.com"],
			token: tokens.lookup,
		});
		expect(((await response.json()) as ErrorBody).error).toMatchObject({
			code: "invalid_request",
			issues: [{ path: "", message: "must be a JSON object" }],
		});
	});
});

describe("GET /v1/suppressions", () => {
	it("lists live entries in address order, filtered, paged to the end", async () => {
		const all = (await (
			await send("GET", "/v1/suppressions", { token: tokens.lookup })
		).json()) as { entries: Json[]; cursor: string | null };
		expect(all.entries.map((entry) => [entry.email, entry.list])).toEqual([
			["bounced@example.com", "bounce"],
			["spam@example.com", "complaint"],
			["unsub@example.com", "unsubscribe"],
		]);
		expect(all.cursor).toBeNull();

		const first = (await (
			await send("GET", "/v1/suppressions?limit=2", { token: tokens.lookup })
		).json()) as { entries: Json[]; cursor: string };
		const second = (await (
			await send("GET", `/v1/suppressions?limit=2&cursor=${first.cursor}`, { token: tokens.lookup })
		).json()) as { entries: Json[]; cursor: string | null };
		expect([...first.entries, ...second.entries]).toEqual(all.entries);
		expect(second.cursor).toBeNull();

		const scoped = (await (
			await send("GET", "/v1/suppressions?list=unsubscribe&scope=news.example.com", {
				token: tokens.lookup,
			})
		).json()) as { entries: Json[] };
		expect(scoped.entries).toHaveLength(1);
	});

	it("gives no cursor when the last page is exactly full", async () => {
		const page = (await (
			await send("GET", "/v1/suppressions?limit=3", { token: tokens.lookup })
		).json()) as { entries: Json[]; cursor: string | null };
		expect(page.entries).toHaveLength(3);
		expect(page.cursor).toBeNull();
	});

	it("lists an entry until the second it expires, and one updated at since", async () => {
		// Later than the entries the callbacks above made.
		const t = Math.floor(Date.now() / 1000) + 1000;
		const emails = async (query: string) => {
			const response = await send("GET", `/v1/suppressions${query}`, { token: tokens.lookup });
			const body = (await response.json()) as { entries: Json[] };
			return body.entries.map((entry) => entry.email);
		};
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(t * 1000);
			await send("PUT", "/v1/suppressions/brief%40example.com", { body: { expiresAt: t + 100 } });
			expect(await emails(`?since=${t}`)).toEqual(["brief@example.com"]);
			expect(await emails(`?since=${t + 1}`)).toEqual([]);
			vi.setSystemTime((t + 99) * 1000);
			expect(await emails("?list=manual")).toEqual(["brief@example.com"]);
			vi.setSystemTime((t + 100) * 1000);
			expect(await emails("?list=manual")).toEqual([]);
		} finally {
			vi.useRealTimers();
		}
	});

	it.each([
		"?list=spam",
		"?scope=a%20b",
		"?since=later",
		"?cursor=nope",
		"?cursor=WzEsMiwzLDRd", // [1,2,3,4]: four parts, but not strings
		"?limit=0",
	])("refuses %s", async (query) => {
		const response = await send("GET", `/v1/suppressions${query}`, { token: tokens.lookup });
		expect(response.status).toBe(400);
	});
});

describe("an address stored before the one-mailbox rule", () => {
	// Callbacks once stored such addresses; they stay reachable for removal, history and erasure.
	const legacy = "a,b@example.com";
	const path = encodeURIComponent(legacy);
	beforeEach(async () => {
		await env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, created_at,
				updated_at, expires_at) VALUES (?1, 'bounce', '*', 'event', 'x', 1, 1, 1, NULL)`,
		)
			.bind(legacy)
			.run();
	});

	it("can be read back, removed and erased, but not added, looked up or checked", async () => {
		const history = await send("GET", `/v1/suppressions/${path}/history`, { token: tokens.lookup });
		expect(history.status).toBe(200);
		expect((await send("PUT", `/v1/suppressions/${path}`, { body: {} })).status).toBe(400);
		const looked = await send("GET", `/v1/suppressions/${path}`, { token: tokens.lookup });
		expect(looked.status).toBe(400);
		const checked = await send("POST", "/v1/suppressions/check", {
			token: tokens.lookup,
			body: { emails: [legacy] },
		});
		expect(await checked.json()).toMatchObject({ invalidCount: 1, deliverableCount: 0 });
		const removed = await send("DELETE", `/v1/suppressions/${path}`);
		expect(await removed.json()).toEqual({ email: legacy, removed: 1 });
		expect((await send("DELETE", `/v1/addresses/${path}?suppressions=true`)).status).toBe(200);
	});
});

describe("PUT /v1/suppressions/{email}", () => {
	it("lists at most 100 issues, however many fields a body gets wrong", async () => {
		const body = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`f${i}`, 0]));
		const response = await send("PUT", "/v1/suppressions/many%40example.com", { body });
		expect(response.status).toBe(400);
		const answer = (await response.json()) as ErrorBody;
		expect(answer.error.issues).toHaveLength(100);
		expect(answer.error.issues?.[0]).toEqual({
			path: "f0",
			message: "is not a field of this body",
		});
	});

	it("takes a reason of 4096 characters with every character escaped", async () => {
		const reason = "中".repeat(4096);
		const response = await call("/v1/suppressions/long%40example.com", {
			method: "PUT",
			headers: { authorization: `Bearer ${tokens.admin}` },
			body: asciiJson({ reason, scope: "news.example.com" }),
		});
		expect(response.status).toBe(200);
		expect((await entriesOf("long@example.com"))[0]?.reason).toBe(reason);
	});

	it("adds a manual entry for every sender by default, idempotently", async () => {
		const first = await send("PUT", "/v1/suppressions/m%40example.com", {
			body: { reason: "asked by phone" },
		});
		expect(first.status).toBe(200);
		const body = (await first.json()) as { suppressed: boolean; entries: Json[] };
		expect(body).toMatchObject({
			suppressed: true,
			entries: [
				{
					list: "manual",
					scope: "*",
					source: "api",
					reason: "asked by phone",
					eventCount: 0,
					expiresAt: null,
				},
			],
		});
		await send("PUT", "/v1/suppressions/m%40example.com", { body: { reason: "asked by phone" } });
		const history = await env.DB.prepare(
			"SELECT count(*) AS n FROM suppression_history WHERE email = 'm@example.com'",
		).first<{ n: number }>();
		expect(history?.n).toBe(1);
		expect((await lookup("m@example.com")).suppressed).toBe(true);
	});

	it("without a body adds a manual entry for every sender; a blank body is still refused", async () => {
		const response = await send("PUT", "/v1/suppressions/nobody%40example.com");
		expect(response.status).toBe(200);
		expect(await response.json()).toMatchObject({
			suppressed: true,
			entries: [{ list: "manual", scope: "*", source: "api", reason: null, expiresAt: null }],
		});
		const blank = await call("/v1/suppressions/blank%40example.com", {
			method: "PUT",
			headers: { authorization: `Bearer ${tokens.admin}` },
			body: " ",
		});
		expect(blank.status).toBe(400);
		expect(((await blank.json()) as ErrorBody).error.code).toBe("invalid_json");
		expect((await lookup("blank@example.com", "?consistent=true")).suppressed).toBe(false);
	});

	it("stores a blank reason as none, so that sending it again or none changes nothing", async () => {
		const path = "/v1/suppressions/blankreason%40example.com";
		expect(await (await send("PUT", path, { body: { reason: " \t " } })).json()).toMatchObject({
			entries: [{ reason: null }],
		});
		await send("PUT", path, { body: { reason: "" } });
		await send("PUT", path, { body: { reason: null } });
		const history = await env.DB.prepare(
			"SELECT count(*) AS n FROM suppression_history WHERE email = 'blankreason@example.com'",
		).first<{ n: number }>();
		expect(history?.n).toBe(1);
	});

	it("updates the reason or the expiry of an entry, and its updatedAt with them", async () => {
		const t = Math.floor(Date.now() / 1000);
		const path = "/v1/suppressions/x%40example.com";
		const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z");
		const entry = async () => {
			const { entries } = (await (await send("GET", `${path}?consistent=true`)).json()) as {
				entries: Json[];
			};
			return entries;
		};
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(t * 1000);
			await send("PUT", path, { body: { reason: "a", expiresAt: t + 1000 } });
			vi.setSystemTime((t + 10) * 1000);
			await send("PUT", path, { body: { reason: "b", expiresAt: t + 1000 } });
			expect(await entry()).toEqual([
				expect.objectContaining({ reason: "b", expiresAt: iso(t + 1000), updatedAt: iso(t + 10) }),
			]);
			vi.setSystemTime((t + 20) * 1000);
			await send("PUT", path, { body: { reason: "b", expiresAt: t + 2000 } });
			expect(await entry()).toEqual([
				expect.objectContaining({ reason: "b", expiresAt: iso(t + 2000), updatedAt: iso(t + 20) }),
			]);
		} finally {
			vi.useRealTimers();
		}
		const { history } = (await (await send("GET", `${path}/history`)).json()) as {
			history: Json[];
		};
		expect(history.map((row) => [row.action, row.note])).toEqual([
			["added", "a"],
			["renewed", "b"],
			["renewed", "b"],
		]);
	});

	it("takes a list, a scope and an expiry", async () => {
		const expiresAt = new Date(Date.now() + 86_400_000).toISOString().replace(/\.\d+Z$/, "Z");
		const response = await send("PUT", "/v1/suppressions/x%40example.com", {
			body: { list: "unsubscribe", scope: "Shop.Example.com", reason: null, expiresAt },
		});
		expect(((await response.json()) as { entries: Json[] }).entries).toEqual([
			expect.objectContaining({ list: "unsubscribe", scope: "shop.example.com", expiresAt }),
		]);
	});

	it.each([
		["a bad list", { list: "vip" }, "list"],
		["a bad scope", { scope: "not a domain" }, "scope"],
		["an expiry in the past", { expiresAt: "2020-01-01T00:00:00Z" }, "expiresAt"],
		["a reason too long", { reason: "x".repeat(4097) }, "reason"],
	])("refuses %s", async (_name, body, path) => {
		const response = await send("PUT", "/v1/suppressions/x%40example.com", { body });
		expect(response.status).toBe(400);
		expect(((await response.json()) as ErrorBody).error.issues?.[0]?.path).toBe(path);
		expect(await entriesOf("x@example.com")).toEqual([]);
	});

	it("refuses an expiry in the second the PUT runs, and takes one a second later", async () => {
		const t = Math.floor(Date.now() / 1000) + 1000;
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(t * 1000);
			const path = "/v1/suppressions/now%40example.com";
			const at = await send("PUT", path, { body: { expiresAt: t } });
			expect(at.status).toBe(400);
			expect(((await at.json()) as ErrorBody).error.issues?.[0]?.path).toBe("expiresAt");
			expect(await entriesOf("now@example.com")).toEqual([]);
			expect((await send("PUT", path, { body: { expiresAt: t + 1 } })).status).toBe(200);
		} finally {
			vi.useRealTimers();
		}
	});
});

describe("DELETE /v1/suppressions/{email}", () => {
	it("removes only the matching entries and records each removal", async () => {
		await send("PUT", "/v1/suppressions/bounced%40example.com", { body: { list: "manual" } });
		const response = await send("DELETE", "/v1/suppressions/bounced%40example.com?list=manual");
		expect(await response.json()).toEqual({ email: "bounced@example.com", removed: 1 });
		expect((await entriesOf("bounced@example.com")).map((entry) => entry.list)).toEqual(["bounce"]);
		const removed = await env.DB.prepare(
			"SELECT action, list, source FROM suppression_history WHERE email = 'bounced@example.com' AND action = 'removed'",
		).all();
		expect(removed.results).toEqual([{ action: "removed", list: "manual", source: "api" }]);
	});

	it("records an entry removed in the second it expires as expired, not removed", async () => {
		const t = Math.floor(Date.now() / 1000);
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(t * 1000);
			await send("PUT", "/v1/suppressions/edge%40example.com", { body: { expiresAt: t + 100 } });
			vi.setSystemTime((t + 100) * 1000);
			const response = await send("DELETE", "/v1/suppressions/edge%40example.com");
			expect(await response.json()).toEqual({ email: "edge@example.com", removed: 0 });
		} finally {
			vi.useRealTimers();
		}
		const history = await env.DB.prepare(
			"SELECT action, at FROM suppression_history WHERE email = 'edge@example.com' ORDER BY seq",
		).all<{ action: string; at: number }>();
		expect(history.results.slice(1)).toEqual([{ action: "expired", at: t + 100 }]);
	});

	it("records no expiry for an entry whose last update already left it expired", async () => {
		// As older evidence leaves it: the update itself was recorded as its removal.
		const now = Math.floor(Date.now() / 1000);
		await env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, created_at,
				updated_at, expires_at) VALUES ('withdrawn@example.com', 'complaint', '*', 'event', 'x', 1,
				?1, ?1, ?2)`,
		)
			.bind(now - 60, now - 120)
			.run();
		const actions = async () => {
			const { results } = await env.DB.prepare(
				"SELECT action FROM suppression_history WHERE email = 'withdrawn@example.com' ORDER BY seq",
			).all<{ action: string }>();
			return results.map((row) => row.action);
		};
		const before = await actions();
		const response = await send("DELETE", "/v1/suppressions/withdrawn%40example.com");
		expect(await response.json()).toEqual({ email: "withdrawn@example.com", removed: 0 });
		expect(await actions()).toEqual(before);
		expect(await entriesOf("withdrawn@example.com")).toEqual([]);
	});

	it("a second removal moves the time before which events cannot bring the entry back", async () => {
		const t = Math.floor(Date.now() / 1000);
		const bounce = (timestamp: number) => ({
			event: "bounce",
			bounceType: "hard_bounce",
			email: "again@example.com",
			timestamp,
		});
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime((t - 1000) * 1000);
			await send("DELETE", "/v1/suppressions/again%40example.com");
			await postCallback([bounce(t - 500)]);
			expect(await entriesOf("again@example.com")).toHaveLength(1);
			vi.setSystemTime(t * 1000);
			await send("DELETE", "/v1/suppressions/again%40example.com");
		} finally {
			vi.useRealTimers();
		}
		await postCallback([bounce(t - 200)]);
		expect(await entriesOf("again@example.com")).toEqual([]);
	});

	it("a removal scoped to a sender domain keeps older unsubscribes from it out, entry or not", async () => {
		const t = Math.floor(Date.now() / 1000);
		const response = await send(
			"DELETE",
			"/v1/suppressions/later%40example.com?scope=news.example.com",
		);
		expect(await response.json()).toEqual({ email: "later@example.com", removed: 0 });
		await postCallback([
			{
				event: "unsubscribe",
				email: "later@example.com",
				timestamp: t - 60,
				fromDomain: "news.example.com",
			},
		]);
		expect(await entriesOf("later@example.com")).toEqual([]);
	});

	/** An operator's entry for `path` that ran out a minute ago, the cron not having run since. */
	async function lapsedEntry(path: string): Promise<number> {
		const expiry = Math.floor(Date.now() / 1000) - 60;
		await send("PUT", `/v1/suppressions/${path}`, { body: { expiresAt: expiry + 3600 } });
		await env.DB.prepare("UPDATE suppressions SET expires_at = ?1, updated_at = ?1 - 3600")
			.bind(expiry)
			.run();
		// The history as the PUT left it: the update above is the test's, not the service's.
		await env.DB.prepare("DELETE FROM suppression_history WHERE action != 'added'").run();
		return expiry;
	}

	it("records an entry that ran out before the cron retired it as expired, not removed", async () => {
		const expiry = await lapsedEntry("lapsed%40example.com");
		const response = await send("DELETE", "/v1/suppressions/lapsed%40example.com");
		expect(await response.json()).toEqual({ email: "lapsed@example.com", removed: 0 });
		const history = await env.DB.prepare(
			"SELECT action, at, source FROM suppression_history WHERE email = 'lapsed@example.com' ORDER BY seq",
		).all();
		expect(history.results.map(({ action, source }) => [action, source])).toEqual([
			["added", "api"],
			["expired", "cron"],
		]);
		expect(history.results[1]?.at).toBe(expiry);
	});

	it.each(["a PUT", "an import of an older file"])(
		"an entry that ran out and comes back by %s records its expiry first",
		async (how) => {
			const expiry = await lapsedEntry("back%40example.com");
			if (how === "a PUT") {
				await send("PUT", "/v1/suppressions/back%40example.com", { body: { reason: "again" } });
			} else {
				// The file's updatedAt is older than the expiry: the entry still comes back now.
				const line = JSON.stringify({
					email: "back@example.com",
					list: "manual",
					scope: "*",
					reason: "again",
					updatedAt: expiry - 600,
				});
				const imported = await call("/v1/suppressions/import", {
					method: "POST",
					headers: {
						authorization: `Bearer ${tokens.admin}`,
						"content-type": "application/x-ndjson",
					},
					body: line,
				});
				expect(await imported.json()).toMatchObject({ imported: 1, failed: [] });
			}
			const history = await env.DB.prepare(
				"SELECT action, at, source FROM suppression_history WHERE email = 'back@example.com' ORDER BY seq",
			).all<{ action: string; at: number; source: string }>();
			expect(history.results.map(({ action, source }) => [action, source])).toEqual([
				["added", "api"],
				["expired", "cron"],
				["added", "api"],
			]);
			expect(history.results[1]?.at).toBe(expiry);
		},
	);

	it("an update that leaves an expired entry expired is a renewal, and the cron records the expiry once", async () => {
		// The writer's clock lags the database's: older evidence, whose time is before the expiry.
		const now = Math.floor(Date.now() / 1000);
		await env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, reason, event_count, last_event_at,
				event_id, created_at, updated_at, expires_at)
			VALUES ('skew@example.com', 'complaint', '*', 'event', 'x', 1, ?1, 'e9', ?1, ?1, ?2)`,
		)
			.bind(now - 3600, now - 60)
			.run();
		const older = {
			email: "skew@example.com",
			list: "complaint" as const,
			scope: "*",
			at: now - 7200,
			eventId: "e1",
			reason: "old",
			bulkId: null,
			expiresAt: now + 86_400,
			rank: `${now - 7200}e1`,
		};
		await applyEvidence(env.DB, [older], now - 300).all();
		await runCron(Date.now());
		const history = await env.DB.prepare(
			"SELECT action FROM suppression_history WHERE email = 'skew@example.com' ORDER BY seq",
		).all<{ action: string }>();
		expect(history.results.map((row) => row.action)).toEqual(["added", "renewed", "expired"]);
	});

	it("refuses an imported line dated in the future, which would date the history by it", async () => {
		const line = JSON.stringify({
			email: "future@example.com",
			list: "manual",
			scope: "*",
			updatedAt: Math.floor(Date.now() / 1000) + 1000,
		});
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "application/x-ndjson" },
			body: line,
		});
		expect(await response.json()).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [{ line: 1, message: "updatedAt is in the future" }],
		});
	});

	it("refuses an imported line created in the future", async () => {
		const now = Math.floor(Date.now() / 1000);
		const line = (email: string, createdAt: number) =>
			JSON.stringify({ email, list: "manual", scope: "*", createdAt });
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "application/x-ndjson" },
			body: [line("born-later@example.com", now + 1000), line("born@example.com", now - 100)].join(
				"\n",
			),
		});
		expect(await response.json()).toEqual({
			imported: 1,
			unchanged: 0,
			failed: [{ line: 1, message: "createdAt is in the future" }],
		});
		expect(await entriesOf("born-later@example.com")).toEqual([]);
	});

	it("refuses an imported line created after its update", async () => {
		const now = Math.floor(Date.now() / 1000);
		const line = (email: string, createdAt: number, updatedAt: number) =>
			JSON.stringify({ email, list: "manual", scope: "*", createdAt, updatedAt });
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "application/x-ndjson" },
			body: [
				line("born-after@example.com", now - 100, now - 200),
				line("born-same@example.com", now - 100, now - 100),
			].join("\n"),
		});
		expect(await response.json()).toEqual({
			imported: 1,
			unchanged: 0,
			failed: [{ line: 1, message: "createdAt is after updatedAt" }],
		});
		expect(await entriesOf("born-after@example.com")).toEqual([]);
	});

	it("updates KV", async () => {
		await send("DELETE", "/v1/suppressions/spam%40example.com");
		expect(await env.SUPPRESSIONS.get("s:spam@example.com")).toBeNull();
	});
});

describe("roles and settings", () => {
	it.each([
		["PUT", "/v1/suppressions/a%40example.com"],
		["DELETE", "/v1/suppressions/a%40example.com"],
	])("%s needs an admin token: 403 for a lookup token, 401 for none", async (method, path) => {
		const read = await send(method, path, { token: tokens.lookup, body: {} });
		expect(read.status).toBe(403);
		expect(((await read.json()) as ErrorBody).error.code).toBe("forbidden");
		expect((await send(method, path, { token: null, body: {} })).status).toBe(401);
		expect((await send(method, path, { token: tokens.callback, body: {} })).status).toBe(401);
	});

	it.each([
		["GET", "/v1/suppressions/a%40example.com"],
		["GET", "/v1/suppressions"],
		["POST", "/v1/suppressions/check"],
	])("%s %s needs a read token", async (method, path) => {
		const body = method === "POST" ? { emails: ["a@example.com"] } : undefined;
		expect((await send(method, path, { token: null, body })).status).toBe(401);
		expect((await send(method, path, { token: tokens.lookup, body })).status).toBe(200);
	});

	it("a bad policy setting answers 503 naming it", async () => {
		const bad = { ...env, SOFT_BOUNCE_LIMIT: "many" };
		const response = await postCallback(
			{ event: "open", email: "a@example.com", timestamp: 1 },
			{ env: bad },
		);
		expect(response.status).toBe(503);
		expect(((await response.json()) as ErrorBody).error.message).toContain("SOFT_BOUNCE_LIMIT");
	});
});

describe("an entry that expired and comes back before the cron retires it", () => {
	// An expired entry is gone (the lookup no longer shows it, its history says `expired`); one
	// that comes back is added anew, the same entry whether or not the cron retired the old row.
	const policyEnv = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "1" } as Env;
	const email = "back@example.com";
	const t = Math.floor(Date.now() / 1000);
	const later = t + 15 * 86_400;
	const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z");
	const hard = (timestamp: number, reason: string) =>
		postCallback(
			{ event: "bounce", bounceType: "hard_bounce", email, timestamp, reason },
			{ env: policyEnv },
		);
	const softRun = (end: number) =>
		postCallback(
			[end - 200, end - 100, end].map((timestamp) => ({
				event: "bounce",
				bounceType: "soft_bounce",
				email,
				timestamp,
				reason: `soft ${timestamp}`,
			})),
			{ env: policyEnv },
		);
	const put = (expiresAt: number) =>
		send("PUT", `/v1/suppressions/${email}`, {
			body: { reason: "asked", expiresAt },
			env: policyEnv,
		});
	const importCsv = () =>
		call(
			"/v1/suppressions/import",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "text/csv" },
				body: `email,list,scope,reason,source,created_at,updated_at,expires_at\n${email},bounce,*,kept,event,,,${iso(later + 86_400)}\n`,
			},
			policyEnv,
		);

	async function broughtBack(
		retired: boolean,
		first: () => Promise<Response>,
		again: () => Promise<Response>,
	) {
		await resetDatabase();
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(t * 1000);
			expect((await first()).status).toBe(200);
			vi.setSystemTime(later * 1000);
			if (retired) await runCron(later * 1000, policyEnv);
			expect((await again()).status).toBe(200);
			const { entries } = await lookup(email, "?consistent=true", policyEnv);
			expect(await lookup(email, "", policyEnv)).toEqual({ email, suppressed: true, entries });
			return entries;
		} finally {
			vi.useRealTimers();
		}
	}

	it.each([
		["a later hard bounce", () => hard(t - 10, "first"), () => hard(later - 10, "second")],
		["a later run of soft bounces", () => softRun(t - 10), () => softRun(later - 10)],
		["a PUT", () => put(t + 60), () => put(later + 86_400)],
		["an import", () => hard(t - 10, "first"), importCsv],
	])("by %s is the same new entry as after the cron", async (_name, first, again) => {
		const kept = await broughtBack(false, first, again);
		const retired = await broughtBack(true, first, again);
		expect(retired).toEqual([expect.objectContaining({ createdAt: iso(later) })]);
		expect(kept).toEqual(retired);
	});
});

describe("a list or a scope no entry can have", () => {
	const listMessage = "must be one of bounce, complaint, unsubscribe, manual";
	const scopeMessage = 'must be "*" or a domain';

	it.each([
		["GET", "/v1/suppressions?list=vip&scope=a%40b.example"],
		["GET", "/v1/suppressions/export?list=vip&scope=a%40b.example"],
		["DELETE", "/v1/suppressions/x%40example.com?list=vip&scope=a%40b.example"],
	])("is refused by %s %s with the same messages", async (method, path) => {
		const response = await send(method, path);
		expect(response.status).toBe(400);
		expect(((await response.json()) as ErrorBody).error).toMatchObject({
			code: "invalid_query",
			issues: [
				{ path: "list", message: listMessage },
				{ path: "scope", message: scopeMessage },
			],
		});
	});

	it("is refused in a PUT body and an import line with the same messages", async () => {
		const put = await send("PUT", "/v1/suppressions/x%40example.com", {
			body: { list: "vip", scope: "a@b.example" },
		});
		expect(put.status).toBe(400);
		expect(((await put.json()) as ErrorBody).error.issues).toEqual([
			{ path: "list", message: listMessage },
			{ path: "scope", message: scopeMessage },
		]);
		const lines = [
			{ email: "x@example.com", list: "vip", scope: "*" },
			{ email: "x@example.com", list: "manual", scope: "a@b.example" },
		];
		const imported = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "application/x-ndjson" },
			body: lines.map((line) => JSON.stringify(line)).join("\n"),
		});
		expect(await imported.json()).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [
				{ line: 1, message: `list ${listMessage}` },
				{ line: 2, message: `scope ${scopeMessage}` },
			],
		});
		expect(await entriesOf("x@example.com")).toEqual([]);
	});
});
