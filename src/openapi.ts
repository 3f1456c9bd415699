import * as z from "zod/mini";
import { ROUTES, type RouteSpec } from "./routes";
import { errorResponse } from "./schemas";

type JsonObject = Record<string, unknown>;

/** JSON Schema (2020-12, as OpenAPI 3.1 uses) of what a client sends or receives. */
function schemaOf(schema: z.ZodMiniType, io: "input" | "output"): JsonObject {
	const { $schema, ...rest } = z.toJSONSchema(schema, {
		io,
		unrepresentable: "any",
		target: "draft-2020-12",
	});
	return rest;
}

const ERROR_TEXT: Record<number, string> = {
	400: "Invalid request (`invalid_json`, `invalid_event`, `invalid_query`, `invalid_request`, `invalid_email`)",
	401: "Missing or wrong bearer token (`unauthorized`)",
	403: "A read token on a write (`forbidden`)",
	404: "Not found (`not_found`)",
	405: "Method not allowed on this path (`method_not_allowed`)",
	409: "Cannot be done in this state (`not_replayable`: only the first 64 KiB of the body were kept)",
	413: "Body too large (`payload_too_large`)",
	415: "Unsupported content type (`unsupported_media_type`)",
	422: "The stored body still fails validation (`still_invalid`)",
	500: "Unexpected failure (`internal`); details only in the log",
	503: "A required setting is missing or invalid (`not_configured`)",
};

// A callback's 404 is also what a wrong token in its URL answers.
const CALLBACK_NOT_FOUND_TEXT =
	"Not found (`not_found`); a wrong callback token answers exactly this";

// A route that lists 503 among its own errors answers `storage_unavailable` with Retry-After when
// D1 refuses its write (the callback, the replay); on any other route 503 is only a setting, and
// a document that promised a retryable 503 there would have clients wait for one that never comes
// (a storage failure there answers 500).
const STORAGE_UNAVAILABLE_TEXT =
	"A required setting is missing or invalid (`not_configured`), or storage is unavailable (`storage_unavailable`, with Retry-After)";
const RETRY_AFTER = {
	description:
		"Seconds to wait before retrying; only with `storage_unavailable`, not `not_configured`",
	schema: { type: "string", pattern: "^[0-9]+$" },
};

// What the query parameters shared by several routes mean; their schemas say what they accept.
const PARAMETER_TEXT: Record<string, string> = {
	limit: "Page size, 1 to 1000 (default 100)",
	cursor: "The opaque `cursor` of the previous page's answer",
	since:
		"From this time, inclusive: ISO 8601 or Unix seconds, up to the end of year 9999 (a fraction of a second rounds up)",
	until:
		"Before this time, exclusive: ISO 8601 or Unix seconds, up to the end of year 9999 (a fraction of a second rounds up)",
};

const REQUEST_ID = {
	description: "This request's id, as its log line carries it",
	required: true,
	schema: { type: "string" },
};

/** Whether a route answers 503 `storage_unavailable`, which its own errors then list. */
function answersStorageUnavailable(route: RouteSpec): boolean {
	return route.errors.includes(503);
}

/** Response headers: every answer's request id, and those some statuses add. */
function headersOf(status: number, retryable = false): JsonObject {
	return {
		"X-Request-Id": REQUEST_ID,
		...(status === 401
			? {
					"WWW-Authenticate": {
						description: "`Bearer`",
						required: true,
						schema: { type: "string", const: "Bearer" },
					},
				}
			: {}),
		...(status === 503 && retryable ? { "Retry-After": RETRY_AFTER } : {}),
	};
}

/** The headers a route's success answer adds, always sent. */
function successHeaders(route: RouteSpec): JsonObject {
	return Object.fromEntries(
		Object.entries(route.response.headers ?? {}).map(([name, { description, pattern }]) => [
			name,
			{ description, required: true, schema: { type: "string", pattern } },
		]),
	);
}

function errorStatuses(route: RouteSpec): number[] {
	// Any route but a callback answers 400 to a URL of more than 100 query parameters.
	const byAccess = { public: [400], callback: [404], read: [401], admin: [401, 403] }[route.access];
	return [
		...new Set([...route.errors, ...byAccess, 500, ...(route.access === "public" ? [] : [503])]),
	].sort();
}

function parameters(route: RouteSpec): JsonObject[] {
	const params: JsonObject[] = [...route.path.matchAll(/:(\w+)/g)].map(([, name]) => ({
		name,
		in: "path",
		required: true,
		schema: { type: "string" },
		description:
			name === "token"
				? "One of CALLBACK_TOKENS"
				: name === "email"
					? "The address, URL-encoded"
					: undefined,
	}));
	if (route.query) {
		const query = schemaOf(route.query, "input") as {
			properties?: JsonObject;
			required?: string[];
		};
		for (const [name, schema] of Object.entries(query.properties ?? {})) {
			params.push({
				name,
				in: "query",
				required: query.required?.includes(name) ?? false,
				schema,
				...(PARAMETER_TEXT[name] ? { description: PARAMETER_TEXT[name] } : {}),
			});
		}
	}
	return params;
}

function content(
	spec: NonNullable<RouteSpec["body"]> | RouteSpec["response"],
	io: "input" | "output",
) {
	if ("schema" in spec) return { "application/json": { schema: schemaOf(spec.schema, io) } };
	return Object.fromEntries(spec.mediaTypes.map((type) => [type, { schema: { type: "string" } }]));
}

function operation(route: RouteSpec): JsonObject {
	const retryable = answersStorageUnavailable(route);
	const errors = Object.fromEntries(
		errorStatuses(route).map((status) => [
			String(status),
			{
				description:
					status === 503 && retryable
						? STORAGE_UNAVAILABLE_TEXT
						: status === 404 && route.access === "callback"
							? CALLBACK_NOT_FOUND_TEXT
							: (ERROR_TEXT[status] ?? "Error"),
				headers: headersOf(status, retryable),
				...(route.method === "HEAD"
					? {}
					: {
							content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
						}),
			},
		]),
	);
	return {
		summary: route.summary,
		operationId: `${route.method.toLowerCase()}${route.path.replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? "").toUpperCase())}`,
		...(route.access === "read" || route.access === "admin"
			? { security: [{ [route.access === "read" ? "lookupToken" : "adminToken"]: [] }] }
			: { security: [] }),
		parameters: parameters(route),
		...(route.body
			? {
					requestBody: {
						required: !("optional" in route.body),
						content: content(route.body, "input"),
						...("description" in route.body ? { description: route.body.description } : {}),
					},
				}
			: {}),
		responses: {
			"200": {
				description: "description" in route.response ? route.response.description : "OK",
				headers: { ...headersOf(200), ...successHeaders(route) },
				// A HEAD answer has the headers of its GET and no body.
				...(route.method === "HEAD" ? {} : { content: content(route.response, "output") }),
			},
			...errors,
		},
	};
}

let cached: JsonObject | undefined;

/** The OpenAPI 3.1 document of every route, generated from the route table and its zod schemas. */
export function openApiDocument(): JsonObject {
	if (cached) return cached;
	const paths: Record<string, JsonObject> = {};
	for (const route of ROUTES) {
		const path = route.path.replace(/:(\w+)/g, "{$1}");
		paths[path] = { ...paths[path], [route.method.toLowerCase()]: operation(route) };
	}
	cached = {
		openapi: "3.1.0",
		info: {
			title: "Tencent SES events and suppression lists",
			version: "1.0.0",
			description:
				"Receives Tencent Cloud SES event callbacks into D1 and answers suppression lookups from KV.",
		},
		servers: [{ url: "/" }],
		paths,
		components: {
			schemas: { Error: schemaOf(errorResponse, "output") },
			securitySchemes: {
				lookupToken: {
					type: "http",
					scheme: "bearer",
					description: "One of LOOKUP_TOKENS or ADMIN_TOKENS",
				},
				adminToken: { type: "http", scheme: "bearer", description: "One of ADMIN_TOKENS" },
			},
		},
	};
	return cached;
}
