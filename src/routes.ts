import type { IRequestStrict } from "itty-router";
import * as z from "zod/mini";
import { json } from "./errors";
import { probeCallback, receiveCallback } from "./events/callback-route";
import { eventsQuery, listEventsRoute } from "./events/list-route";
import { rejectedListRoute, rejectedQuery, replayRoute } from "./events/rejected-routes";
import { statsQuery, statsRoute } from "./events/stats-route";
import * as out from "./schemas";
import { deleteQuery, deleteRoute, putBody, putRoute } from "./suppressions/admin-routes";
import { eraseQuery, eraseRoute, historyRoute } from "./suppressions/history-routes";
import {
	checkBody,
	checkRoute,
	listQuery,
	listRoute,
	lookupQuery,
	lookupRoute,
} from "./suppressions/lookup-routes";
import { exportQuery, exportRoute, importRoute } from "./suppressions/transfer-routes";
import { tencentEventSchema } from "./tencent/schema";

/** The request as handlers see it: itty-router's fields plus our request id. */
export interface AppRequest extends IRequestStrict {
	requestId: string;
	startedAt: number;
	/** Fields a handler adds to the request's one log line. */
	logFields?: Record<string, unknown>;
}

/** Who may call a route: anyone, Tencent with a callback token in the path, or a bearer token. */
type Access = "public" | "callback" | "read" | "admin";

type Handler = (
	request: AppRequest,
	env: Env,
	ctx: ExecutionContext,
) => Promise<Response> | Response;

/** One route: how it is served, and how the OpenAPI document describes it. */
export interface RouteSpec {
	method: "GET" | "HEAD" | "POST" | "PUT" | "DELETE";
	/** itty-router pattern, e.g. `/v1/suppressions/:email`. */
	path: string;
	access: Access;
	handler: Handler;
	summary: string;
	query?: z.ZodMiniType;
	/** Request body: a JSON schema (`optional` when no body stands for `{}`), or raw media types. */
	body?:
		| { schema: z.ZodMiniType; optional?: true; description?: string }
		| { mediaTypes: string[]; description: string };
	/**
	 * Success response: a JSON schema, or other media types described in words; `headers` are
	 * those it carries besides every answer's X-Request-Id, each with a pattern of its value.
	 */
	response: (
		| { schema: z.ZodMiniType; description?: string }
		| { mediaTypes: string[]; description: string }
	) & { headers?: Record<string, { description: string; pattern: string }> };
	/**
	 * Error statuses this route answers besides those every route of its access may. 503 here
	 * means `storage_unavailable` with Retry-After (D1 refused the write; the request may be sent
	 * again), which the OpenAPI document then declares; 503 `not_configured` comes with access.
	 */
	errors: number[];
}

const callbackBody = z.union([
	tencentEventSchema,
	z.array(tencentEventSchema).check(z.minLength(1), z.maxLength(1000)),
]);

/** The whole route table: the router serves it, the OpenAPI document describes it. */
export const ROUTES: RouteSpec[] = [
	{
		method: "GET",
		path: "/healthz",
		access: "public",
		handler: () => json({ ok: true }),
		summary: "Liveness probe",
		response: { schema: out.okResponse },
		errors: [],
	},
	{
		method: "GET",
		path: "/openapi.json",
		access: "public",
		handler: async () => json((await import("./openapi")).openApiDocument()),
		summary: "This OpenAPI 3.1 document",
		response: { schema: out.openApiResponse, description: "The OpenAPI document" },
		errors: [],
	},
	{
		method: "POST",
		path: "/v1/callbacks/tencent/:token",
		access: "callback",
		handler: receiveCallback,
		summary: "Receive Tencent SES events (one object or an array)",
		body: {
			schema: callbackBody,
			description:
				"One Tencent event, or an array of 1 to MAX_EVENTS_PER_REQUEST of them (default 100; the setting goes up to 1000, the array's maximum here)",
		},
		response: { schema: out.callbackResponse },
		errors: [400, 413, 503],
	},
	{
		method: "GET",
		path: "/v1/callbacks/tencent/:token",
		access: "callback",
		handler: probeCallback,
		summary: "Reachability probe for the callback URL",
		response: { schema: out.okResponse },
		errors: [],
	},
	{
		method: "HEAD",
		path: "/v1/callbacks/tencent/:token",
		access: "callback",
		handler: probeCallback,
		summary: "Reachability probe for the callback URL",
		response: { schema: out.okResponse },
		errors: [],
	},
	{
		method: "GET",
		path: "/v1/events",
		access: "read",
		handler: listEventsRoute,
		summary: "Stored events, newest first",
		query: eventsQuery,
		response: { schema: out.eventsResponse },
		errors: [400],
	},
	{
		method: "GET",
		path: "/v1/stats",
		access: "read",
		handler: statsRoute,
		summary: "Per-day event counts, totals, bounce and complaint rates",
		query: statsQuery,
		response: { schema: out.statsResponse },
		errors: [400],
	},
	{
		method: "POST",
		path: "/v1/suppressions/check",
		access: "read",
		handler: checkRoute,
		summary: "Check up to 1000 addresses before a send",
		body: { schema: checkBody },
		response: { schema: out.checkResponse },
		errors: [400, 413],
	},
	{
		method: "GET",
		path: "/v1/suppressions/export",
		access: "read",
		handler: exportRoute,
		summary: "Every live entry, streamed as CSV or NDJSON",
		query: exportQuery,
		response: {
			mediaTypes: ["text/csv", "application/x-ndjson"],
			description:
				"CSV with header email,list,scope,reason,source,created_at,updated_at,expires_at, or one JSON entry per line",
			headers: {
				"Content-Disposition": {
					description:
						"A download named for the day and the format, e.g. `suppressions-2026-11-22.csv`",
					pattern: '^attachment; filename="suppressions-\\d{4}-\\d{2}-\\d{2}\\.(csv|ndjson)"$',
				},
			},
		},
		errors: [400],
	},
	{
		method: "POST",
		path: "/v1/suppressions/import",
		access: "admin",
		handler: importRoute,
		summary: "Import entries from CSV or NDJSON (at most 10,000 lines)",
		body: {
			mediaTypes: ["text/csv", "application/x-ndjson", "application/ndjson"],
			description: "The export's formats",
		},
		response: { schema: out.importResponse },
		errors: [400, 413, 415],
	},
	{
		method: "GET",
		path: "/v1/suppressions",
		access: "read",
		handler: listRoute,
		summary: "Live entries in address order",
		query: listQuery,
		response: { schema: out.entriesResponse },
		errors: [400],
	},
	{
		method: "GET",
		path: "/v1/suppressions/:email/history",
		access: "read",
		handler: historyRoute,
		summary: "Every change to an address's entries, oldest first",
		response: { schema: out.historyResponse },
		errors: [400],
	},
	{
		method: "GET",
		path: "/v1/suppressions/:email",
		access: "read",
		handler: lookupRoute,
		summary: "May I mail this address?",
		query: lookupQuery,
		response: { schema: out.lookupResponse },
		errors: [400],
	},
	{
		method: "PUT",
		path: "/v1/suppressions/:email",
		access: "admin",
		handler: putRoute,
		summary: "Add or update an operator's entry (idempotent)",
		body: { schema: putBody, optional: true },
		response: { schema: out.lookupResponse },
		errors: [400, 413],
	},
	{
		method: "DELETE",
		path: "/v1/suppressions/:email",
		access: "admin",
		handler: deleteRoute,
		summary: "Remove entries; older events never bring them back",
		query: deleteQuery,
		response: { schema: out.removedResponse },
		errors: [400],
	},
	{
		method: "GET",
		path: "/v1/rejected",
		access: "read",
		handler: rejectedListRoute,
		summary: "Rejected callbacks, newest first",
		query: rejectedQuery,
		response: { schema: out.rejectedResponse },
		errors: [400],
	},
	{
		method: "POST",
		path: "/v1/rejected/:id/replay",
		access: "admin",
		handler: replayRoute,
		summary: "Replay a rejected callback through today's validation",
		response: { schema: out.replayResponse },
		errors: [400, 404, 409, 422, 503],
	},
	{
		method: "DELETE",
		path: "/v1/addresses/:email",
		access: "admin",
		handler: eraseRoute,
		summary: "Erase an address's events (and, on request, its entries)",
		query: eraseQuery,
		response: { schema: out.eraseResponse },
		errors: [400],
	},
];
