import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { call, postCallback, resetDatabase, tokens } from "../helpers";

type Body = string | Uint8Array | undefined;
interface Case {
	name: string;
	method: string;
	path: string;
	body?: Body;
	token?: string;
	contentType?: string;
	status: number;
	code?: string;
}

const CALLBACK = `/v1/callbacks/tencent/${tokens.callback}`;
const valid = {
	event: "delivered",
	email: "someone@example.com",
	bulkId: "qcloud-ses-1",
	timestamp: 1767225600,
};
const json = (value: unknown) => JSON.stringify(value);
const bytes = (...values: number[]) => new Uint8Array(values);
const utf8 = (text: string) => new TextEncoder().encode(text);

function callback(name: string, body: Body, status = 400, code = "invalid_event"): Case {
	return { name: `callback: ${name}`, method: "POST", path: CALLBACK, body, status, code };
}

const cases: Case[] = [];

// Malformed and truncated JSON.
for (const raw of [
	"{",
	"[",
	'{"a":}',
	"nul",
	"tru",
	"{'event':'open'}",
	'{"a":1,}',
	"[1,]",
	'"unterminated',
	'{"a" 1}',
	"NaN",
	"Infinity",
	"01",
	"{}}",
	"",
	"   ",
	"\u0000",
]) {
	cases.push(callback(`malformed ${json(raw)}`, raw, 400, "invalid_json"));
}
const sample = json({ ...valid, reason: "550 mailbox unavailable" });
for (const cut of [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, sample.length - 1]) {
	cases.push(callback(`truncated at ${cut}`, sample.slice(0, cut), 400, "invalid_json"));
}
// Invalid UTF-8: a lone continuation byte, a bad pair, an overlong form, an encoded surrogate, a cut sequence.
for (const [name, raw] of [
	["0xff", bytes(0x7b, 0xff, 0x7d)],
	["bad pair", bytes(0x22, 0xc3, 0x28, 0x22)],
	["overlong slash", bytes(0x22, 0xc0, 0xaf, 0x22)],
	["encoded surrogate", bytes(0x22, 0xed, 0xa0, 0x80, 0x22)],
	["cut sequence", bytes(...utf8('{"reason":"caf'), 0xc3)],
] as const) {
	cases.push(callback(`invalid UTF-8 (${name})`, raw, 400, "invalid_json"));
}
// Lone surrogates, in every kind of string.
for (const field of [
	"reason",
	"subject",
	"bulkId",
	"link",
	"useragent",
	"messageId",
	"from",
	"X-Tencentcloudses-Cb-Note",
	"extraField",
]) {
	cases.push(
		callback(
			`lone surrogate in ${field}`,
			json({ ...valid, [field]: "a" }).replace('"a"', '"\\ud800"'),
		),
	);
}
cases.push(
	callback("lone surrogate in the address", json(valid).replace("someone", "some\\udc00one")),
);
cases.push(
	callback("lone surrogate in a field name", json(valid).replace('"bulkId"', '"bulk\\ud800"')),
);
cases.push(
	callback(
		"lone surrogate deep in an unknown field",
		json({ ...valid, nested: { a: ["x"] } }).replace('"x"', '"\\udfff"'),
	),
);
// Wrong types for every modeled field.
const wrongTypes: Record<string, unknown[]> = {
	event: [1, true, ["open"], { e: 1 }],
	email: [1, true, ["a@example.com"], null],
	timestamp: [true, "soon", [1], { t: 1 }, null],
	bulkId: [1, true, {}],
	bulkid: [1, []],
	reason: [1, false, {}],
	bounceType: [1, "medium", true],
	username: [true, {}, -1],
	from: [1, []],
	fromDomain: [1, {}],
	templateId: ["abc", -5, 1.5, true],
	link: [1, {}],
	useragent: [1, []],
	subject: [1, {}],
	messageId: [1, []],
	sentTimestamp: ["later", -1, 2.5],
	eventid: ["three", 0, 99, 1.5],
	taskId: ["x", -1, {}],
	"X-Tencentcloudses-Cb-Order": [1, { a: 1 }, true],
};
for (const [field, values] of Object.entries(wrongTypes)) {
	for (const value of values)
		cases.push(callback(`${field} = ${json(value)}`, json({ ...valid, [field]: value })));
}
// Timestamps that are not real dates in Unix seconds.
for (const timestamp of [
	-1,
	0.5,
	1767225600.25,
	1767225600000,
	1e21,
	253402300800,
	"1e9",
	" 123",
	"",
	"12a",
	"-5",
	"0x10",
]) {
	cases.push(callback(`timestamp ${json(timestamp)}`, json({ ...valid, timestamp })));
}
// Over-long strings.
for (const [field, length] of [
	["email", 300],
	["reason", 4097],
	["subject", 4097],
	["link", 8193],
	["bulkId", 513],
	["messageId", 999],
	["useragent", 2049],
	["X-Tencentcloudses-Cb-Big", 4097],
	["username", 65],
	["fromDomain", 254],
] as const) {
	const value = field === "email" ? `${"a".repeat(length)}@example.com` : "x".repeat(length);
	cases.push(callback(`${field} of ${length} characters`, json({ ...valid, [field]: value })));
}
// Control characters and new lines in addresses.
for (const [name, char] of [
	["LF", "\n"],
	["CR", "\r"],
	["tab", "\t"],
	["NUL", "\u0000"],
	["NEL", "\u0085"],
	["LS", "\u2028"],
	["space", " "],
	["DEL", "\u007f"],
]) {
	cases.push(
		callback(`${name} inside the address`, json({ ...valid, email: `some${char}one@example.com` })),
	);
}
// Shapes and sizes.
let deep: unknown = "bottom";
for (let i = 0; i < 12; i++) deep = { level: deep };
cases.push(callback("an unknown field nested 12 deep", json({ ...valid, deep })));
cases.push(callback("arrays nested 100000 deep", `${"[".repeat(100_000)}${"]".repeat(100_000)}`));
// Too deep for the reviver that keeps a long number exact: parsed plainly, and refused for its shape.
cases.push(
	callback(
		"arrays nested 100000 deep around a number beyond 2^53",
		`${"[".repeat(100_000)}12345678901234567890${"]".repeat(100_000)}`,
	),
);
cases.push(
	callback(
		"5000 unknown fields",
		json({ ...valid, ...Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`f${i}`, i])) }),
	),
);
cases.push(
	callback(
		"an unknown array of 3000 values",
		json({ ...valid, many: Array.from({ length: 3000 }, (_, i) => i) }),
	),
);
cases.push(
	callback(
		"event only in __proto__",
		'{"email":"a@example.com","timestamp":1,"__proto__":{"event":"open"}}',
	),
);
cases.push(
	callback(
		"__proto__ as the whole event",
		'{"__proto__":{"event":"open","email":"a@example.com","timestamp":1}}',
	),
);
cases.push(callback("constructor only", '{"constructor":{"prototype":{"event":"open"}}}'));
// A repeated name is refused whichever of its values would pass: JSON keeps only the last.
for (const [name, raw] of [
	[
		"duplicate key, the last bad",
		'{"event":"open","event":"bogus","email":"a@example.com","timestamp":1}',
	],
	[
		"duplicate key, the last good",
		'{"event":"bogus","event":"open","email":"a@example.com","timestamp":1}',
	],
	[
		"duplicate address, the last bad",
		'{"event":"open","email":"a@example.com","email":"nope","timestamp":1}',
	],
] as const) {
	cases.push(callback(name, raw, 400, "invalid_json"));
}
cases.push(callback("an empty array", "[]"));
cases.push(callback("101 events", json(Array.from({ length: 101 }, () => valid))));
cases.push(
	callback("one bad event among good ones", json([valid, valid, { ...valid, email: "bad" }])),
);
cases.push(callback("an array of arrays", json([[valid]])));
cases.push(callback("a number", "42"));
cases.push(callback("null", "null"));
cases.push(callback("a string", '"event"'));
cases.push(
	callback(
		"a body over 256 KiB",
		json({ ...valid, pad: "x".repeat(300 * 1024) }),
		413,
		"payload_too_large",
	),
);
cases.push(callback("an eventid that disagrees", json({ ...valid, eventid: 3 })));
cases.push(callback("bulkid that disagrees with bulkId", json({ ...valid, bulkid: "other" })));
// Methods and paths of the callback.
for (const method of ["PUT", "DELETE", "PATCH"]) {
	cases.push({
		name: `callback: ${method}`,
		method,
		path: CALLBACK,
		body: json(valid),
		status: 405,
		code: "method_not_allowed",
	});
}
for (const path of [
	// Percent-encoded, the token is itself (RFC 3986); a wrong one, or a malformed escape, is not.
	`/v1/callbacks/tencent/${`${tokens.callback}x`.replace(/-/g, "%2D")}`,
	`/v1/callbacks/tencent/${tokens.callback}%zz`,
	"/v1/callbacks/tencent/",
	"/v1/callbacks/tencent/..%2F..%2Fhealthz",
	`/v1/callbacks/tencent/${tokens.callback}/extra`,
	`/v1/callbacks/TENCENT/${tokens.callback}`,
]) {
	cases.push({
		name: `callback path ${path.replace(tokens.callback, "<token>")}`,
		method: "POST",
		path,
		body: json(valid),
		status: 404,
		code: "not_found",
	});
}

// The API routes.
const api = (
	name: string,
	method: string,
	path: string,
	status: number,
	code: string,
	extra: Partial<Case> = {},
): Case => ({
	name: `${method} ${name}`,
	method,
	path,
	status,
	code,
	token: method === "GET" || path === "/v1/suppressions/check" ? tokens.lookup : tokens.admin,
	...extra,
});
for (const raw of [
	"%ZZ",
	"%E0%A4%A",
	"no-at-sign",
	"%00%40example.com",
	"a%0A%40example.com",
	"a%20b%40example.com",
	`${"a".repeat(300)}%40example.com`,
	"%40",
	"a%40",
	"%F0%9F%98%80",
]) {
	cases.push(
		api(`lookup /${raw.slice(0, 20)}`, "GET", `/v1/suppressions/${raw}`, 400, "invalid_email"),
	);
	cases.push(
		api(
			`history /${raw.slice(0, 20)}`,
			"GET",
			`/v1/suppressions/${raw}/history`,
			400,
			"invalid_email",
		),
	);
}
for (const query of [
	"?consistent=maybe",
	"?fromDomain=",
	"?fromDomain=a%20b",
	"?colour=red",
	"?consistent=true&consistent=false",
]) {
	cases.push(
		api(`lookup ${query}`, "GET", `/v1/suppressions/a%40example.com${query}`, 400, "invalid_query"),
	);
}
const check = (name: string, body: Body, status = 400, code = "invalid_request") =>
	api(`check: ${name}`, "POST", "/v1/suppressions/check", status, code, { body });
cases.push(check("no body", undefined, 400, "invalid_json"));
cases.push(check("bad JSON", '{"emails":', 400, "invalid_json"));
cases.push(check("bad UTF-8", bytes(0x7b, 0xff), 400, "invalid_json"));
cases.push(check("an array", "[]"));
cases.push(check("emails a string", json({ emails: "a@example.com" })));
cases.push(check("a number among the emails", json({ emails: ["a@example.com", 1] })));
cases.push(check("no emails", json({ emails: [] })));
cases.push(
	check(
		"1001 emails",
		json({ emails: Array.from({ length: 1001 }, (_, i) => `a${i}@example.com`) }),
	),
);
// Not JSON: refused at once. Its names scanned first, every quote would start a string that runs
// to the end of the 2 MB (escaped quotes never close it), a million times over.
cases.push(
	check(
		"an unterminated string of a million escaped quotes",
		`"${'\\"'.repeat(1_000_000)}`,
		400,
		"invalid_json",
	),
);
cases.push(check("fromDomain a number", json({ emails: ["a@example.com"], fromDomain: 5 })));
cases.push(
	check("fromDomain with a space", json({ emails: ["a@example.com"], fromDomain: "a b" })),
);
cases.push(
	check(
		"over 2 MiB",
		json({ emails: [`${"a".repeat(2100 * 1024)}@example.com`] }),
		413,
		"payload_too_large",
	),
);
const put = (
	name: string,
	body: Body,
	path = "/v1/suppressions/a%40example.com",
	code = "invalid_request",
) => api(`put: ${name}`, "PUT", path, 400, code, { body });
cases.push(put("bad JSON", "{", undefined, "invalid_json"));
cases.push(put("an array", "[]"));
cases.push(put("a string", '"manual"'));
cases.push(put("a bad list", json({ list: "vip" })));
cases.push(put("a bad scope", json({ scope: "a b" })));
cases.push(put("scope a wildcard domain", json({ scope: "*.example.com" })));
cases.push(put("a long reason", json({ reason: "x".repeat(4097) })));
cases.push(put("a misspelt field", json({ expires_at: "2030-01-01" })));
cases.push(put("a lone surrogate in the reason", '{"reason":"x\\ud800"}'));
cases.push(put("expiry in the past", json({ expiresAt: "2001-01-01T00:00:00Z" })));
cases.push(put("expiry garbage", json({ expiresAt: "next week" })));
cases.push(put("expiry a boolean", json({ expiresAt: true })));
cases.push(put("a bad address", json({}), "/v1/suppressions/nope", "invalid_email"));
for (const query of ["?list=vip", "?scope=a%20b", "?colour=red", "?list=bounce&list=manual"]) {
	cases.push(
		api(
			`delete ${query}`,
			"DELETE",
			`/v1/suppressions/a%40example.com${query}`,
			400,
			"invalid_query",
		),
	);
}
cases.push(api("delete a bad address", "DELETE", "/v1/suppressions/nope", 400, "invalid_email"));
const listQueries = [
	"?list=spam",
	"?limit=0",
	"?limit=abc",
	"?limit=1001",
	"?limit=-1",
	"?cursor=garbage",
	"?cursor=WyJhIl0",
	"?since=soon",
	"?scope=a%20b",
	"?list=bounce&list=manual",
	"?colour=red",
];
for (const query of listQueries)
	cases.push(api(`list ${query}`, "GET", `/v1/suppressions${query}`, 400, "invalid_query"));
const eventQueries = [
	"?limit=0",
	"?limit=x",
	"?cursor=%%%",
	"?cursor=WzEsMiwzXQ",
	"?event=bogus",
	"?email=nope",
	"?since=2026-02-30",
	"?until=12:00",
	"?emial=a%40example.com",
	"?bulkId=a&bulkId=b",
	`?messageId=${"m".repeat(1000)}`,
	"?bulkId=",
	"?messageId=%20",
];
for (const query of eventQueries)
	cases.push(
		api(`events ${query.slice(0, 30)}`, "GET", `/v1/events${query}`, 400, "invalid_query"),
	);
for (const query of [
	"?since=soon",
	"?until=x",
	"?since=2026-02-01&until=2026-01-01",
	"?fromDomain=a%20b",
	"?days=7",
]) {
	cases.push(api(`stats ${query}`, "GET", `/v1/stats${query}`, 400, "invalid_query"));
}
for (const query of ["?cursor=garbage", "?limit=0", "?page=2"])
	cases.push(api(`rejected ${query}`, "GET", `/v1/rejected${query}`, 400, "invalid_query"));
cases.push(api("replay an unknown id", "POST", "/v1/rejected/no-such-id/replay", 404, "not_found"));
for (const query of ["?format=xml", "?list=vip", "?scope=a%20b", "?colour=red"]) {
	cases.push(
		api(`export ${query}`, "GET", `/v1/suppressions/export${query}`, 400, "invalid_query"),
	);
}
cases.push(
	api("import as JSON", "POST", "/v1/suppressions/import", 415, "unsupported_media_type", {
		body: "[]",
		contentType: "application/json",
	}),
);
cases.push(
	api("import without a header", "POST", "/v1/suppressions/import", 400, "invalid_request", {
		body: "a@example.com,manual,*,,api,,,",
		contentType: "text/csv",
	}),
);
cases.push(
	api("import bad UTF-8", "POST", "/v1/suppressions/import", 400, "invalid_request", {
		body: bytes(0xff, 0xfe),
		contentType: "text/csv",
	}),
);
// Routes that take no query parameters refuse any: each of these would otherwise be ignored and
// change what the caller gets (the check without its sender, a manual entry instead of a bounce
// entry, a replay that runs for real).
for (const [name, method, path, extra] of [
	[
		"check ?fromDomain",
		"POST",
		"/v1/suppressions/check?fromDomain=news.example.com",
		{ body: '{"emails":["a@example.com"]}' },
	],
	["put ?list", "PUT", "/v1/suppressions/a%40example.com?list=bounce", { body: "{}" }],
	["history ?limit", "GET", "/v1/suppressions/a%40example.com/history?limit=10", {}],
	["replay ?dry_run", "POST", "/v1/rejected/1/replay?dry_run=true", {}],
	[
		"import ?format",
		"POST",
		"/v1/suppressions/import?format=csv",
		{
			body: "email,list,scope,reason,source,created_at,updated_at,expires_at\n",
			contentType: "text/csv",
		},
	],
] as const) {
	cases.push(api(name, method, path, 400, "invalid_query", extra));
}
// Thousands of repeats of one parameter once cost a hundred times a request's CPU, before auth.
// A callback goes on without its query (a wrong token is then the unknown path it always is).
for (const [path, status, code] of [
	["/v1/events", 400, "invalid_query"],
	["/healthz", 400, "invalid_query"],
	["/v1/callbacks/tencent/wrong-token", 404, "not_found"],
] as const) {
	cases.push(
		api(
			`${path} with 8,000 query parameters`,
			"GET",
			`${path}?${Array(8000).fill("a=1").join("&")}`,
			status,
			code,
		),
	);
}
// A repeat whose first value is empty is still a repeat, and `__proto__` is a name like any other.
for (const [name, method, path] of [
	["events", "GET", "/v1/events?limit=&limit=5"],
	["lookup", "GET", "/v1/suppressions/a%40example.com?fromDomain=&fromDomain=news.example.com"],
	["delete", "DELETE", "/v1/suppressions/a%40example.com?list=&list=bounce"],
	["export", "GET", "/v1/suppressions/export?format=&format=ndjson"],
	["events __proto__", "GET", "/v1/events?__proto__=1"],
	["check __proto__", "POST", "/v1/suppressions/check?__proto__="],
] as const) {
	cases.push(api(`${name} ${path.slice(path.indexOf("?"))}`, method, path, 400, "invalid_query"));
}
// A parameter that is not validly URL-encoded is refused, not read as U+FFFD or as itself.
for (const [name, method, path] of [
	["lookup", "GET", "/v1/suppressions/a%40example.com?fromDomain=b%FCcher.de"],
	["lookup", "GET", "/v1/suppressions/a%40example.com?fromDomain=news.example.com%"],
	["events", "GET", "/v1/events?email=a%zz%40example.com"],
	["events", "GET", "/v1/events?bulkId=qcloud%E0%A4"],
	["events", "GET", "/v1/events?%FF=1"],
	["delete", "DELETE", "/v1/suppressions/a%40example.com?scope=b%FCcher.de"],
	["erase", "DELETE", "/v1/addresses/a%40example.com?suppressions=tru%E0"],
	["check", "POST", "/v1/suppressions/check?%zz"],
] as const) {
	cases.push(
		api(`${name} ${path.slice(path.indexOf("?"))}`, method, path, 400, "invalid_query", {
			body: method === "POST" ? '{"emails":["a@example.com"]}' : undefined,
		}),
	);
}
// A route that takes no body refuses one rather than ignore it: the DELETE would remove every
// entry of the address, not only the manual one.
for (const [name, method, path] of [
	["delete", "DELETE", "/v1/suppressions/bounced%40example.com"],
	["erase", "DELETE", "/v1/addresses/bounced%40example.com"],
	["replay", "POST", "/v1/rejected/1/replay"],
] as const) {
	cases.push(
		api(`${name} with a body`, method, path, 400, "invalid_request", {
			body: '{"list":"manual"}',
			contentType: "application/json",
		}),
	);
}
cases.push(api("erase a bad address", "DELETE", "/v1/addresses/nope", 400, "invalid_email"));
cases.push(
	api(
		"erase ?suppressions=maybe",
		"DELETE",
		"/v1/addresses/a%40example.com?suppressions=maybe",
		400,
		"invalid_query",
	),
);
for (const [method, path] of [
	["PATCH", "/v1/suppressions/a%40example.com"],
	["POST", "/v1/events"],
	["DELETE", "/v1/stats"],
	["PATCH", "/v1/suppressions/check"],
	["POST", "/healthz"],
]) {
	cases.push(
		api(`wrong method ${path}`, method as string, path as string, 405, "method_not_allowed"),
	);
}
for (const path of [
	"/v2/events",
	"/v1/suppression/a%40example.com",
	"/v1/events/x",
	"/v1/../../etc/passwd",
	"/v1/rejected/x/replay/now",
]) {
	cases.push(api(`unknown path ${path}`, "GET", path, 404, "not_found"));
}

/** Everything D1 and KV hold but the rejected-callback records. */
async function state(): Promise<string> {
	const tables = [
		"events",
		"suppressions",
		"suppression_removals",
		"suppression_history",
		"daily_stats",
		"edge_pending",
		"cron_state",
		"soft_bounce_recheck",
	];
	const rows = await Promise.all(
		tables.map(async (table) => {
			const { results } = await env.DB.prepare(`SELECT * FROM ${table}`).all();
			return results.map((row) => JSON.stringify(row)).sort();
		}),
	);
	const keys = await env.SUPPRESSIONS.list();
	const values = await Promise.all(keys.keys.map((key) => env.SUPPRESSIONS.get(key.name)));
	return JSON.stringify({ rows, keys: keys.keys.map((key) => key.name), values });
}

beforeAll(async () => {
	await resetDatabase();
	await postCallback([
		valid,
		{ ...valid, event: "bounce", bounceType: "hard_bounce", email: "bounced@example.com" },
		{ ...valid, event: "unsubscribe", email: "a@example.com", fromDomain: "news.example.com" },
	]);
});

describe("hostile requests get a clear 4xx in the contract's shape and change nothing", () => {
	it("there are at least 150 of them", () => {
		expect(cases.length).toBeGreaterThanOrEqual(150);
	});

	it.each(cases.map((c) => [c.name, c]))("%s", async (_name, c) => {
		const before = await state();
		const headers: Record<string, string> = {};
		if (c.token) headers.authorization = `Bearer ${c.token}`;
		if (c.contentType) headers["content-type"] = c.contentType;
		const response = await call(c.path, { method: c.method, headers, body: c.body });
		expect(response.status).toBe(c.status);
		expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
		const body = (await response.json()) as {
			error?: { code?: unknown; message?: unknown; issues?: unknown };
		};
		expect(Object.keys(body)).toEqual(["error"]);
		expect(body.error?.code).toBe(c.code);
		expect(typeof body.error?.message).toBe("string");
		if (body.error?.issues !== undefined) {
			expect(Array.isArray(body.error.issues)).toBe(true);
			for (const issue of body.error.issues as Array<Record<string, unknown>>) {
				expect(typeof issue.path).toBe("string");
				expect(typeof issue.message).toBe("string");
			}
		}
		expect(await state()).toBe(before);
	});
});
