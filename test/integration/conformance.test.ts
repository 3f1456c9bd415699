import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import {
	call,
	docSamples,
	envWithFailingBatch,
	getJson,
	postCallback,
	putSuppression,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

// What the Worker answers, checked against the OpenAPI document it serves (GET /openapi.json),
// not a copy: every operation answers every status it declares (those it cannot reach are named
// below, with the reason), each answer validates against the schema declared for its status, and
// carries the declared headers and content type. The schemas are checked by the small JSON Schema
// checker below: validators that compile schemas with `new Function` do not run in workerd.

type Json = Record<string, unknown>;
type Schema = Json | boolean;
interface Header {
	required?: boolean;
	schema?: Schema;
}
interface DeclaredResponse {
	description?: string;
	headers?: Record<string, Header>;
	content?: Record<string, { schema?: Schema }>;
}
interface Operation {
	responses: Record<string, DeclaredResponse>;
	parameters?: Array<{ name: string; in: string; schema: Schema }>;
	security?: Array<Record<string, unknown>>;
}
interface Document {
	paths: Record<string, Record<string, Operation>>;
	components: { schemas: Record<string, Schema> };
}

let doc: Document;

// ---------------------------------------------------------------------------------------------
// A JSON Schema (2020-12) checker for the keywords the document uses. A keyword it does not know
// fails the test, so the document cannot start using one that would then be silently ignored.

const ANNOTATIONS = new Set([
	"description",
	"title",
	"default",
	"examples",
	"$comment",
	"deprecated",
	"readOnly",
	"writeOnly",
]);
const ASSERTIONS = new Set([
	"$ref",
	"type",
	"const",
	"enum",
	"anyOf",
	"oneOf",
	"allOf",
	"properties",
	"required",
	"additionalProperties",
	"propertyNames",
	"items",
	"minItems",
	"maxItems",
	"minLength",
	"maxLength",
	"pattern",
	"format",
	"minimum",
	"maximum",
	"exclusiveMinimum",
	"exclusiveMaximum",
]);

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i;

function isObject(value: unknown): value is Json {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

function hasType(type: string, value: unknown): boolean {
	switch (type) {
		case "null":
			return value === null;
		case "boolean":
			return typeof value === "boolean";
		case "string":
			return typeof value === "string";
		case "number":
			return typeof value === "number" && Number.isFinite(value);
		case "integer":
			return Number.isInteger(value);
		case "array":
			return Array.isArray(value);
		case "object":
			return isObject(value);
		default:
			throw new Error(`unknown type ${type}`);
	}
}

/** A value for a message, cut short. */
function show(value: unknown): string {
	const text = JSON.stringify(value) ?? String(value);
	return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

function equal(a: unknown, b: unknown): boolean {
	return JSON.stringify(a) === JSON.stringify(b);
}

function resolve(ref: string): Schema {
	const prefix = "#/components/schemas/";
	const target = ref.startsWith(prefix) ? doc.components.schemas[ref.slice(prefix.length)] : null;
	if (target === undefined || target === null) throw new Error(`unresolvable $ref ${ref}`);
	return target;
}

/** Where `value` breaks `schema`, one line each; empty when it conforms. */
function violations(schema: Schema, value: unknown, at = "$"): string[] {
	if (schema === true) return [];
	if (schema === false) return [`${at}: nothing is allowed here`];
	for (const key of Object.keys(schema)) {
		if (!ASSERTIONS.has(key) && !ANNOTATIONS.has(key)) {
			throw new Error(`${at}: the checker does not know the keyword ${key}`);
		}
	}
	const s = schema as Json & {
		$ref?: string;
		type?: string | string[];
		enum?: unknown[];
		anyOf?: Schema[];
		oneOf?: Schema[];
		allOf?: Schema[];
		properties?: Record<string, Schema>;
		required?: string[];
		additionalProperties?: Schema;
		propertyNames?: Schema;
		items?: Schema;
		minItems?: number;
		maxItems?: number;
		minLength?: number;
		maxLength?: number;
		pattern?: string;
		format?: string;
		minimum?: number;
		maximum?: number;
		exclusiveMinimum?: number;
		exclusiveMaximum?: number;
	};
	const found: string[] = [];
	if (s.$ref) found.push(...violations(resolve(s.$ref), value, at));
	if (s.type !== undefined) {
		const types = Array.isArray(s.type) ? s.type : [s.type];
		if (!types.some((type) => hasType(type, value))) {
			return [...found, `${at}: ${show(value)} is not of type ${types.join(" | ")}`];
		}
	}
	if ("const" in s && !equal(s.const, value)) {
		found.push(`${at}: ${show(value)} is not ${show(s.const)}`);
	}
	if (s.enum && !s.enum.some((option) => equal(option, value))) {
		found.push(`${at}: ${show(value)} is not one of ${show(s.enum)}`);
	}
	if (s.anyOf && !s.anyOf.some((sub) => violations(sub, value, at).length === 0)) {
		const why = s.anyOf.map((sub) => violations(sub, value, at).join("; ")).join(" / ");
		found.push(`${at}: matches no anyOf branch (${why})`);
	}
	if (s.oneOf) {
		const matching = s.oneOf.filter((sub) => violations(sub, value, at).length === 0).length;
		if (matching !== 1) found.push(`${at}: matches ${matching} oneOf branches, not 1`);
	}
	for (const sub of s.allOf ?? []) found.push(...violations(sub, value, at));
	if (typeof value === "string") {
		const length = [...value].length;
		if (s.minLength !== undefined && length < s.minLength)
			found.push(`${at}: shorter than ${s.minLength}`);
		if (s.maxLength !== undefined && length > s.maxLength)
			found.push(`${at}: longer than ${s.maxLength}`);
		if (s.pattern !== undefined && !new RegExp(s.pattern, "u").test(value)) {
			found.push(`${at}: ${show(value)} does not match ${s.pattern}`);
		}
		if (s.format === "date-time" && !(DATE_TIME.test(value) && !Number.isNaN(Date.parse(value)))) {
			found.push(`${at}: ${show(value)} is not a date-time`);
		} else if (s.format !== undefined && s.format !== "date-time") {
			throw new Error(`${at}: the checker does not know the format ${s.format}`);
		}
	}
	if (typeof value === "number") {
		if (s.minimum !== undefined && value < s.minimum) found.push(`${at}: below ${s.minimum}`);
		if (s.maximum !== undefined && value > s.maximum) found.push(`${at}: above ${s.maximum}`);
		if (s.exclusiveMinimum !== undefined && value <= s.exclusiveMinimum) {
			found.push(`${at}: not above ${s.exclusiveMinimum}`);
		}
		if (s.exclusiveMaximum !== undefined && value >= s.exclusiveMaximum) {
			found.push(`${at}: not below ${s.exclusiveMaximum}`);
		}
	}
	if (Array.isArray(value)) {
		if (s.minItems !== undefined && value.length < s.minItems)
			found.push(`${at}: fewer than ${s.minItems} items`);
		if (s.maxItems !== undefined && value.length > s.maxItems)
			found.push(`${at}: more than ${s.maxItems} items`);
		if (s.items !== undefined) {
			for (const [i, item] of value.entries()) {
				found.push(...violations(s.items, item, `${at}[${i}]`));
			}
		}
	}
	if (isObject(value)) {
		for (const name of s.required ?? []) {
			if (!(name in value)) found.push(`${at}: lacks the required ${name}`);
		}
		for (const [name, item] of Object.entries(value)) {
			const declared = s.properties?.[name];
			if (declared !== undefined) found.push(...violations(declared, item, `${at}.${name}`));
			else if (s.additionalProperties !== undefined) {
				found.push(...violations(s.additionalProperties, item, `${at}.${name}`));
			}
			if (s.propertyNames !== undefined) {
				found.push(
					...violations(s.propertyNames, name, `${at} (the name ${JSON.stringify(name)})`),
				);
			}
		}
	}
	return found;
}

// ---------------------------------------------------------------------------------------------
// The requests. Each produces one status of one operation; state is set up through the API.

const state = {
	/** A rejected body that today's default settings accept. */
	replayable: "",
	/** A rejected body that still fails validation. */
	stillInvalid: "",
	/** A rejected body of which only the first 64 KiB were kept. */
	truncated: "",
};

const readToken = { authorization: `Bearer ${tokens.lookup}` };
const adminToken = { authorization: `Bearer ${tokens.admin}` };
const noTokens = { ...env, LOOKUP_TOKENS: "", ADMIN_TOKENS: "" } as Env;
const noCallbackTokens = { ...env, CALLBACK_TOKENS: "" } as Env;
const tooManyParameters = `?${Array.from({ length: 101 }, (_, i) => `p${i}=1`).join("&")}`;
const event = (email: string, timestamp = 1_700_000_000) => ({
	event: "bounce",
	bounceType: "hard_bounce",
	email,
	timestamp,
	reason: "550 5.1.1 no such user",
});

/** An env whose D1 and KV fail every call: what a handler does not expect answers 500. */
function brokenEnv(): Env {
	const fail = () => {
		throw new Error("injected storage failure");
	};
	const db = new Proxy(env.DB, {
		get: (_, property) => (property === "prepare" || property === "batch" ? fail : undefined),
	});
	const kv = new Proxy(env.SUPPRESSIONS, {
		get: (_, property) =>
			property === "get" || property === "put" || property === "list" ? fail : undefined,
	});
	return { ...env, DB: db, SUPPRESSIONS: kv };
}

/** A request body whose upload breaks off after its first bytes. */
function brokenUpload(): ReadableStream<Uint8Array> {
	let sent = false;
	return new ReadableStream({
		pull(controller) {
			if (sent) controller.error(new Error("connection reset"));
			else controller.enqueue(new TextEncoder().encode('{"emails": ['));
			sent = true;
		},
	});
}

interface Case {
	/** `METHOD /path` as the document names the operation. */
	operation: string;
	status: number;
	/** The error code expected, for an error status. */
	code?: string;
	/** The media type expected, when the operation declares several. */
	type?: string;
	what: string;
	send: () => Promise<Response>;
}

const CALLBACK = "/v1/callbacks/tencent/{token}";
const callbackPath = `/v1/callbacks/tencent/${tokens.callback}`;

const cases: Case[] = [
	// Public.
	{ operation: "GET /healthz", status: 200, what: "ok", send: () => call("/healthz") },
	{
		operation: "GET /healthz",
		status: 400,
		code: "invalid_query",
		what: "more than 100 query parameters",
		send: () => call(`/healthz${tooManyParameters}`),
	},
	{
		operation: "GET /openapi.json",
		status: 200,
		what: "the document",
		send: () => call("/openapi.json"),
	},
	{
		operation: "GET /openapi.json",
		status: 400,
		code: "invalid_query",
		what: "more than 100 query parameters",
		send: () => call(`/openapi.json${tooManyParameters}`),
	},

	// The callback and its probes.
	{
		operation: `POST ${CALLBACK}`,
		status: 200,
		what: "Tencent's samples",
		send: () => postCallback(docSamples),
	},
	{
		operation: `POST ${CALLBACK}`,
		status: 400,
		code: "invalid_json",
		what: "a body that is not JSON",
		send: () => postCallback("{ nope"),
	},
	{
		operation: `POST ${CALLBACK}`,
		status: 400,
		code: "invalid_event",
		what: "an array with a bad second event",
		send: () => postCallback([event("ok@example.com"), { event: "nope", email: "x" }]),
	},
	{
		operation: `POST ${CALLBACK}`,
		status: 404,
		code: "not_found",
		what: "a wrong token",
		send: () => postCallback([event("a@example.com")], { token: "wrong-token-0000000000" }),
	},
	{
		operation: `POST ${CALLBACK}`,
		status: 413,
		code: "payload_too_large",
		what: "a body over 256 KiB",
		send: () => postCallback(`[${" ".repeat(256 * 1024)}]`),
	},
	{
		operation: `POST ${CALLBACK}`,
		status: 500,
		code: "internal",
		what: "an upload that breaks off",
		send: () =>
			call(callbackPath, { method: "POST", body: brokenUpload(), duplex: "half" } as RequestInit),
	},
	{
		operation: `POST ${CALLBACK}`,
		status: 503,
		code: "storage_unavailable",
		what: "D1 refusing the batch",
		send: () => postCallback([event("d1@example.com")], { env: envWithFailingBatch() }),
	},
	{
		operation: `POST ${CALLBACK}`,
		status: 503,
		code: "not_configured",
		what: "no CALLBACK_TOKENS",
		send: () => postCallback([event("a@example.com")], { env: noCallbackTokens }),
	},
	...(["GET", "HEAD"] as const).flatMap((method): Case[] => [
		{
			operation: `${method} ${CALLBACK}`,
			status: 200,
			what: "the probe",
			send: () => call(callbackPath, { method }),
		},
		{
			operation: `${method} ${CALLBACK}`,
			status: 404,
			code: "not_found",
			what: "a wrong token",
			send: () => call("/v1/callbacks/tencent/wrong-token-0000000000", { method }),
		},
		{
			operation: `${method} ${CALLBACK}`,
			status: 503,
			code: "not_configured",
			what: "no CALLBACK_TOKENS",
			send: () => call(callbackPath, { method }, noCallbackTokens),
		},
	]),
];

/** The statuses every route behind a bearer token answers alike. */
function bearerCases(
	operation: string,
	request: (auth: Record<string, string>, testEnv?: Env) => Promise<Response>,
	admin: boolean,
	broken: () => Promise<Response>,
): Case[] {
	const own = admin ? adminToken : readToken;
	return [
		{
			operation,
			status: 401,
			code: "unauthorized",
			what: "no token",
			send: () => request({}),
		},
		{
			operation,
			status: 401,
			code: "unauthorized",
			what: "a wrong token",
			send: () => request({ authorization: "Bearer not-a-token-000000" }),
		},
		...(admin
			? [
					{
						operation,
						status: 403,
						code: "forbidden",
						what: "a read token",
						send: () => request(readToken),
					},
				]
			: []),
		{
			operation,
			status: 503,
			code: "not_configured",
			what: "no tokens configured",
			send: () => request(own, noTokens),
		},
		{ operation, status: 500, code: "internal", what: "storage failing", send: broken },
	];
}

/** A request to send with the given auth headers, and an env of the test's choosing. */
function route(
	method: string,
	path: string,
	init: RequestInit = {},
): (auth: Record<string, string>, testEnv?: Env) => Promise<Response> {
	return (auth, testEnv) => {
		const headers = new Headers(init.headers);
		for (const [name, value] of Object.entries(auth)) headers.set(name, value);
		return call(path, { method, ...init, headers }, testEnv);
	};
}

function withToken(
	method: string,
	path: string,
	access: "read" | "admin",
	init: RequestInit = {},
	testEnv?: Env,
): Promise<Response> {
	return route(method, path, init)(access === "admin" ? adminToken : readToken, testEnv);
}

// Reads.
for (const [operation, path, good, bad, code] of [
	["GET /v1/events", "/v1/events", "?limit=1000", "?limit=0", "invalid_query"],
	["GET /v1/stats", "/v1/stats", "?since=2020-01-01", "?since=yesterday", "invalid_query"],
	["GET /v1/suppressions", "/v1/suppressions", "?list=bounce", "?list=nope", "invalid_query"],
	["GET /v1/rejected", "/v1/rejected", "?limit=50", "?cursor=garbage", "invalid_query"],
	[
		"GET /v1/suppressions/{email}",
		"/v1/suppressions/bounced%40example.com",
		"?consistent=true",
		"?consistent=maybe",
		"invalid_query",
	],
	[
		"GET /v1/suppressions/{email}/history",
		"/v1/suppressions/bounced%40example.com/history",
		"",
		"?since=1",
		"invalid_query",
	],
] as const) {
	cases.push(
		{
			operation,
			status: 200,
			what: good || "no filter",
			send: () => withToken("GET", path + good, "read"),
		},
		{ operation, status: 400, code, what: bad, send: () => withToken("GET", path + bad, "read") },
		...bearerCases(operation, route("GET", path), false, () =>
			withToken("GET", path, "read", {}, brokenEnv()),
		),
	);
}
cases.push(
	{
		operation: "GET /v1/suppressions/{email}",
		status: 200,
		what: "an address without entries, from the edge",
		send: () =>
			withToken("GET", "/v1/suppressions/nobody%40example.com?fromDomain=example.com", "read"),
	},
	{
		operation: "GET /v1/suppressions/{email}",
		status: 400,
		code: "invalid_email",
		what: "not an address",
		send: () => withToken("GET", "/v1/suppressions/not-an-address", "read"),
	},
	{
		operation: "GET /v1/suppressions/{email}/history",
		status: 400,
		code: "invalid_email",
		what: "not an address",
		send: () => withToken("GET", "/v1/suppressions/not-an-address/history", "read"),
	},
	{
		operation: "GET /v1/rejected",
		status: 200,
		what: "a page of one",
		send: () => withToken("GET", "/v1/rejected?limit=1", "read"),
	},
);

// The pre-send check.
const checkInit = (body: unknown): RequestInit => ({ method: "POST", body: JSON.stringify(body) });
cases.push(
	{
		operation: "POST /v1/suppressions/check",
		status: 200,
		what: "suppressed, deliverable and invalid addresses",
		send: () =>
			withToken(
				"POST",
				"/v1/suppressions/check",
				"read",
				checkInit({
					emails: ["Bounced@Example.com", "fine@example.com", "not an address"],
					fromDomain: "example.com",
				}),
			),
	},
	{
		operation: "POST /v1/suppressions/check",
		status: 400,
		code: "invalid_request",
		what: "no addresses",
		send: () => withToken("POST", "/v1/suppressions/check", "read", checkInit({ emails: [] })),
	},
	{
		operation: "POST /v1/suppressions/check",
		status: 400,
		code: "invalid_json",
		what: "a body that is not JSON",
		send: () => withToken("POST", "/v1/suppressions/check", "read", { method: "POST", body: "{" }),
	},
	{
		operation: "POST /v1/suppressions/check",
		status: 413,
		code: "payload_too_large",
		what: "a body over 2 MiB",
		send: () =>
			withToken("POST", "/v1/suppressions/check", "read", {
				method: "POST",
				body: `{"emails": ["a@example.com"]${" ".repeat(2 * 1024 * 1024)}}`,
			}),
	},
	...bearerCases(
		"POST /v1/suppressions/check",
		route("POST", "/v1/suppressions/check", checkInit({ emails: ["a@example.com"] })),
		false,
		() =>
			withToken(
				"POST",
				"/v1/suppressions/check",
				"read",
				checkInit({ emails: ["a@example.com"] }),
				brokenEnv(),
			),
	),
);

// The export, in both formats.
for (const format of ["csv", "ndjson"] as const) {
	const type = format === "csv" ? "text/csv" : "application/x-ndjson";
	cases.push({
		operation: "GET /v1/suppressions/export",
		status: 200,
		type,
		what: format,
		send: () => withToken("GET", `/v1/suppressions/export?format=${format}`, "read"),
	});
}
cases.push(
	{
		operation: "GET /v1/suppressions/export",
		status: 400,
		code: "invalid_query",
		what: "an unknown format",
		send: () => withToken("GET", "/v1/suppressions/export?format=xml", "read"),
	},
	...bearerCases(
		"GET /v1/suppressions/export",
		route("GET", "/v1/suppressions/export"),
		false,
		() => withToken("GET", "/v1/suppressions/export", "read", {}, brokenEnv()),
	),
);

// The import.
const importInit = (body: string, type = "text/csv"): RequestInit => ({
	method: "POST",
	body,
	headers: { "content-type": type },
});
const csv =
	"email,list,scope,reason,source,created_at,updated_at,expires_at\nimported@example.com,manual,*,,api,,,\nbad,manual,*,,api,,,\n";
cases.push(
	{
		operation: "POST /v1/suppressions/import",
		status: 200,
		what: "CSV with a bad line",
		send: () => withToken("POST", "/v1/suppressions/import", "admin", importInit(csv)),
	},
	{
		operation: "POST /v1/suppressions/import",
		status: 200,
		what: "NDJSON",
		send: () =>
			withToken(
				"POST",
				"/v1/suppressions/import",
				"admin",
				importInit(
					'{"email":"nd@example.com","list":"manual","scope":"*"}\n',
					"application/x-ndjson",
				),
			),
	},
	{
		operation: "POST /v1/suppressions/import",
		status: 400,
		code: "invalid_query",
		what: "a query parameter",
		send: () => withToken("POST", "/v1/suppressions/import?dryRun=true", "admin", importInit(csv)),
	},
	{
		operation: "POST /v1/suppressions/import",
		status: 413,
		code: "payload_too_large",
		what: "a body over 8 MiB",
		send: () =>
			withToken(
				"POST",
				"/v1/suppressions/import",
				"admin",
				importInit(`${csv}${"\n".repeat(8 * 1024 * 1024)}`),
			),
	},
	{
		operation: "POST /v1/suppressions/import",
		status: 415,
		code: "unsupported_media_type",
		what: "JSON",
		send: () =>
			withToken("POST", "/v1/suppressions/import", "admin", importInit("[]", "application/json")),
	},
	...bearerCases(
		"POST /v1/suppressions/import",
		route("POST", "/v1/suppressions/import", importInit(csv)),
		true,
		() => withToken("POST", "/v1/suppressions/import", "admin", importInit(csv), brokenEnv()),
	),
);

// An operator's entries.
const putPath = "/v1/suppressions/put%40example.com";
cases.push(
	{
		operation: "PUT /v1/suppressions/{email}",
		status: 200,
		what: "an entry with a scope and an expiry",
		send: () =>
			withToken("PUT", putPath, "admin", {
				body: JSON.stringify({
					list: "unsubscribe",
					scope: "news.example.com",
					reason: "asked",
					expiresAt: Math.floor(Date.now() / 1000) + 86_400,
				}),
			}),
	},
	{
		operation: "PUT /v1/suppressions/{email}",
		status: 200,
		what: "no body",
		send: () => withToken("PUT", putPath, "admin"),
	},
	{
		operation: "PUT /v1/suppressions/{email}",
		status: 400,
		code: "invalid_request",
		what: "an unknown list",
		send: () => withToken("PUT", putPath, "admin", { body: JSON.stringify({ list: "nope" }) }),
	},
	{
		operation: "PUT /v1/suppressions/{email}",
		status: 400,
		code: "invalid_email",
		what: "not an address",
		send: () => withToken("PUT", "/v1/suppressions/nope", "admin"),
	},
	{
		operation: "PUT /v1/suppressions/{email}",
		status: 413,
		code: "payload_too_large",
		what: "a body over 64 KiB",
		send: () => withToken("PUT", putPath, "admin", { body: `{}${" ".repeat(64 * 1024)}` }),
	},
	...bearerCases("PUT /v1/suppressions/{email}", route("PUT", putPath), true, () =>
		withToken("PUT", putPath, "admin", {}, brokenEnv()),
	),
	{
		operation: "DELETE /v1/suppressions/{email}",
		status: 200,
		what: "one list",
		send: () => withToken("DELETE", `${putPath}?list=unsubscribe`, "admin"),
	},
	{
		operation: "DELETE /v1/suppressions/{email}",
		status: 400,
		code: "invalid_query",
		what: "an unknown list",
		send: () => withToken("DELETE", `${putPath}?list=nope`, "admin"),
	},
	...bearerCases("DELETE /v1/suppressions/{email}", route("DELETE", putPath), true, () =>
		withToken("DELETE", putPath, "admin", {}, brokenEnv()),
	),
);

// Replays of rejected callbacks.
const replay = (id: () => string, testEnv?: Env, query = "") =>
	withToken("POST", `/v1/rejected/${id()}/replay${query}`, "admin", {}, testEnv);
cases.push(
	{
		operation: "POST /v1/rejected/{id}/replay",
		status: 503,
		code: "storage_unavailable",
		what: "D1 refusing the batch",
		send: () => replay(() => state.replayable, envWithFailingBatch()),
	},
	{
		operation: "POST /v1/rejected/{id}/replay",
		status: 200,
		what: "a body today's settings accept",
		send: () => replay(() => state.replayable),
	},
	{
		operation: "POST /v1/rejected/{id}/replay",
		status: 400,
		code: "invalid_query",
		what: "a query parameter",
		send: () => replay(() => state.replayable, undefined, "?dryRun=true"),
	},
	{
		operation: "POST /v1/rejected/{id}/replay",
		status: 404,
		code: "not_found",
		what: "an unknown id",
		send: () => replay(() => "no-such-id"),
	},
	{
		operation: "POST /v1/rejected/{id}/replay",
		status: 409,
		code: "not_replayable",
		what: "a truncated body",
		send: () => replay(() => state.truncated),
	},
	{
		operation: "POST /v1/rejected/{id}/replay",
		status: 422,
		code: "still_invalid",
		what: "a body that still fails",
		send: () => replay(() => state.stillInvalid),
	},
	...bearerCases(
		"POST /v1/rejected/{id}/replay",
		(headers, testEnv) =>
			route("POST", `/v1/rejected/${state.replayable}/replay`)(headers, testEnv),
		true,
		() => replay(() => state.replayable, brokenEnv()),
	),
);

// Erasure.
const erasePath = "/v1/addresses/erased%40example.com";
cases.push(
	{
		operation: "DELETE /v1/addresses/{email}",
		status: 200,
		what: "events and entries",
		send: () => withToken("DELETE", `${erasePath}?suppressions=true`, "admin"),
	},
	{
		operation: "DELETE /v1/addresses/{email}",
		status: 400,
		code: "invalid_query",
		what: "suppressions=maybe",
		send: () => withToken("DELETE", `${erasePath}?suppressions=maybe`, "admin"),
	},
	{
		operation: "DELETE /v1/addresses/{email}",
		status: 400,
		code: "invalid_email",
		what: "not an address",
		send: () => withToken("DELETE", "/v1/addresses/nope", "admin"),
	},
	...bearerCases("DELETE /v1/addresses/{email}", route("DELETE", erasePath), true, () =>
		withToken("DELETE", erasePath, "admin", {}, brokenEnv()),
	),
);

/** Declared statuses no request can produce, and why. */
const UNREACHABLE: Record<string, string> = {
	"GET /healthz 500": "answers a constant",
	"GET /openapi.json 500": "answers a constant",
	[`GET ${CALLBACK} 500`]: "compares a token and answers a constant",
	[`HEAD ${CALLBACK} 500`]: "compares a token and answers a constant",
};

// ---------------------------------------------------------------------------------------------

function operationOf(name: string): Operation {
	const [method = "", path = ""] = name.split(" ");
	const operation = doc.paths[path]?.[method.toLowerCase()];
	if (!operation) throw new Error(`the document has no operation ${name}`);
	return operation;
}

function declaredOperations(): string[] {
	return Object.entries(doc.paths).flatMap(([path, methods]) =>
		Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`),
	);
}

async function setUp(): Promise<void> {
	await resetDatabase();
	// An address with events and an entry, one to erase, and an operator's entry.
	expect(
		(await postCallback([event("bounced@example.com"), event("erased@example.com")])).status,
	).toBe(200);
	await putSuppression("erased@example.com", { list: "manual" });
	// The stats come from the cron's rollup: a day with counts to validate.
	await runCron();
	const stats = (await (await getJson("/v1/stats?since=2020-01-01")).json()) as { days: unknown[] };
	expect(stats.days.length).toBeGreaterThan(0);
	// Rejected callbacks: one that the default settings accept (refused for MAX_EVENTS_PER_REQUEST
	// = 1), one that still fails, and one whose body was cut at 64 KiB.
	const two = [event("replay@example.com"), event("replay@example.com", 1_700_000_001)];
	expect(
		(await postCallback(two, { env: { ...env, MAX_EVENTS_PER_REQUEST: "1" } as Env })).status,
	).toBe(400);
	expect((await postCallback([{ event: "nope", email: "still@example.com" }])).status).toBe(400);
	expect((await postCallback(`["${"x".repeat(100 * 1024)}`)).status).toBe(400);
	const page = (await (await getJson("/v1/rejected")).json()) as {
		rejected: Array<{ id: string; body: string; truncated: boolean }>;
	};
	const find = (test: (row: { body: string; truncated: boolean }) => boolean) =>
		page.rejected.find(test)?.id ?? "";
	state.replayable = find((row) => row.body.includes("replay@example.com"));
	state.stillInvalid = find((row) => row.body.includes("still@example.com"));
	state.truncated = find((row) => row.truncated);
	expect(Object.values(state).every((id) => id !== "")).toBe(true);
}

beforeAll(async () => {
	const response = await call("/openapi.json");
	expect(response.status).toBe(200);
	doc = (await response.json()) as Document;
	await setUp();
});

describe("answers conform to the OpenAPI document", () => {
	it("every declared status of every operation has a request that produces it", () => {
		const covered = new Set(cases.map((c) => `${c.operation} ${c.status}`));
		const declared = declaredOperations().flatMap((operation) =>
			Object.keys(operationOf(operation).responses).map((status) => `${operation} ${status}`),
		);
		const missing = declared.filter((key) => !covered.has(key) && !(key in UNREACHABLE));
		expect(missing).toEqual([]);
		// Nothing named unreachable is produced after all, or no longer declared.
		expect(
			Object.keys(UNREACHABLE).filter((key) => covered.has(key) || !declared.includes(key)),
		).toEqual([]);
	});

	// A client retries a 503 `storage_unavailable` after its Retry-After, and treats any other 503
	// (`not_configured`) as a setting to fix: an operation may promise the first only if a request
	// to it can produce one.
	it("only operations that can answer storage_unavailable declare it and its Retry-After", () => {
		const produced = new Set(
			cases.filter((c) => c.code === "storage_unavailable").map((c) => c.operation),
		);
		const promised = declaredOperations().filter((operation) => {
			const declared = operationOf(operation).responses["503"];
			return (
				declared !== undefined &&
				(declared.description?.includes("storage_unavailable") === true ||
					"Retry-After" in (declared.headers ?? {}))
			);
		});
		expect(promised.sort()).toEqual([...produced].sort());
	});

	// A client that checks its query against the document must not be refused for it. The
	// parameters left out take rules a schema cannot state: a plausible address, a calendar
	// date, a cursor this API issued.
	it("every value a query parameter's schema allows is accepted", async () => {
		const values = [
			...[
				"0",
				"1",
				"01",
				"0001",
				"99",
				"100",
				"0999",
				"1000",
				"01000",
				"1001",
				"9999",
				"-1",
				"1.5",
			],
			...["", " ", "\t", "abc", "true", "false", "TRUE", "csv", "ndjson", "bounce", "manual", "*"],
			...["example.com", "Example.COM", "example.com.", "xn--bcher-kva.de", "bücher.de", "a b"],
		];
		const refused: string[] = [];
		for (const [path, methods] of Object.entries(doc.paths)) {
			for (const [method, operation] of Object.entries(methods)) {
				const auth = operation.security?.[0];
				const headers = auth ? ("adminToken" in auth ? adminToken : readToken) : {};
				const url = path.replace("{email}", "param%40example.com");
				for (const param of operation.parameters ?? []) {
					if (param.in !== "query" || ["email", "since", "until", "cursor"].includes(param.name))
						continue;
					for (const value of values.filter((v) => violations(param.schema, v).length === 0)) {
						const query = `?${param.name}=${encodeURIComponent(value)}`;
						const response = await call(`${url}${query}`, { method, headers });
						if (response.status === 400) refused.push(`${method.toUpperCase()} ${path}${query}`);
					}
				}
			}
		}
		expect(refused).toEqual([]);
	});

	// A method no operation declares is outside the document; the Worker's Allow must then name
	// exactly the methods the document declares on the path (and HEAD wherever GET is).
	it("a method the document does not declare on a path answers 405, its Allow the declared ones", async () => {
		for (const [path, methods] of Object.entries(doc.paths)) {
			const url = path
				.replace("{token}", tokens.callback)
				.replace("{email}", "a%40example.com")
				.replace("{id}", "some-id");
			const declared = Object.keys(methods).map((method) => method.toUpperCase());
			if (declared.includes("GET") && !declared.includes("HEAD")) declared.push("HEAD");
			const response = await call(url, { method: "PATCH" });
			expect(response.status, path).toBe(405);
			expect(response.headers.get("allow")?.split(", ").sort(), path).toEqual(declared.sort());
			expect(response.headers.get("x-request-id")).toMatch(/\S/);
			const body: unknown = await response.json();
			expect(violations({ $ref: "#/components/schemas/Error" }, body)).toEqual([]);
		}
	});

	it.each(cases)("$operation $status: $what", async (c) => {
		const operation = operationOf(c.operation);
		const response = await c.send();
		const text = await response.text();
		expect(response.status, text.slice(0, 500)).toBe(c.status);
		const declared = operation.responses[String(c.status)];
		expect(declared, `${c.operation} does not declare ${c.status}`).toBeDefined();
		if (!declared) return;

		// Headers: every declared header the document marks required, the ones the contract ties to
		// a status, and none of those (nor an export's Content-Disposition) unless declared for this
		// status.
		const headers = declared.headers ?? {};
		for (const [name, header] of Object.entries(headers)) {
			const value = response.headers.get(name);
			if (header.required) expect(value, `header ${name}`).not.toBeNull();
			if (value !== null && header.schema) expect(violations(header.schema, value)).toEqual([]);
		}
		expect(Object.keys(headers)).toContain("X-Request-Id");
		expect(response.headers.get("x-request-id")).toMatch(/\S/);
		for (const name of ["WWW-Authenticate", "Retry-After", "Allow", "Content-Disposition"]) {
			if (response.headers.has(name))
				expect(Object.keys(headers), `header ${name}`).toContain(name);
		}
		if (c.status === 401) expect(response.headers.get("www-authenticate")).toBe("Bearer");
		if (c.code === "storage_unavailable") {
			expect(response.headers.get("retry-after")).toMatch(/^\d+$/);
		}

		// The body: none for HEAD, else of a declared media type and valid against its schema.
		const contentType = response.headers.get("content-type") ?? "";
		const mediaType = contentType.split(";")[0]?.trim().toLowerCase() ?? "";
		if (c.operation.startsWith("HEAD ")) {
			expect(declared.content).toBeUndefined();
			expect(text).toBe("");
			return;
		}
		const content = declared.content ?? {};
		expect(Object.keys(content), `content type ${contentType}`).toContain(mediaType);
		if (c.type) expect(mediaType).toBe(c.type);
		const schema = content[mediaType]?.schema ?? true;
		if (mediaType === "application/json") {
			expect(contentType).toBe("application/json; charset=utf-8");
			const body: unknown = JSON.parse(text);
			expect(violations(schema, body)).toEqual([]);
			if (c.status >= 400) {
				expect((body as { error: { code: string } }).error.code).toBe(c.code);
			}
		} else {
			expect(violations(schema, text)).toEqual([]);
			expect(contentType).toMatch(/; charset=utf-8$/);
			const lines = text.split(/\r?\n/).filter((line) => line !== "");
			expect(lines.length).toBeGreaterThan(1);
			if (mediaType === "text/csv") {
				expect(lines[0]).toBe("email,list,scope,reason,source,created_at,updated_at,expires_at");
			} else {
				for (const line of lines) expect(isObject(JSON.parse(line))).toBe(true);
			}
		}
	});
});
