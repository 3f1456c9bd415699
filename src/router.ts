import { type IRequest, type RequestHandler, Router } from "itty-router";
import * as z from "zod/mini";
import { authorize, type Role } from "./auth";
import { readBody } from "./body";
import { addCorsHeaders, answerPreflight } from "./cors";
import { ApiError, errorToResponse, notFound } from "./errors";
import { log } from "./log";
import { parseQuery, readQuery } from "./query";
import { type AppRequest, ROUTES, type RouteSpec } from "./routes";

type Args = [env: Env, ctx: ExecutionContext];

/** A `before`-style stage that lets the request through only with a token of `role`. */
function requireRole(role: Role): RequestHandler<AppRequest, Args> {
	return async (request, env) => {
		await authorize(request, env, role);
	};
}

/** An API route's query, read again so that every repeated parameter shows as one. */
function takeQuery(request: AppRequest): void {
	request.query = readQuery(request.url);
}

// An API route that takes no query parameters refuses any, as the others refuse unknown ones: a
// parameter the route would ignore (`?fromDomain=` on the check, `?list=` on a PUT) must not
// silently change what the caller gets.
const NO_QUERY = z.strictObject({});
function refuseQuery(request: AppRequest): void {
	takeQuery(request);
	parseQuery(NO_QUERY, request.query);
}

// An API route that takes no body refuses one for the same reason: a DELETE whose filters come
// as JSON (`{"list":"manual"}`, as some HTTP clients send them) would otherwise remove every
// entry of the address, bounces and complaints included. An empty body is no body.
async function refuseBody(request: AppRequest): Promise<void> {
	if (request.body === null) return;
	if ((await readBody(request, 0)).tooLarge) {
		throw new ApiError(
			400,
			"invalid_request",
			"This route takes no request body: send its parameters in the query string",
		);
	}
}

// Every GET also answers HEAD (RFC 9110): the same status and headers, without the body.
const SERVED: RouteSpec[] = ROUTES.flatMap((route) =>
	route.method === "GET" &&
	!ROUTES.some((other) => other.method === "HEAD" && other.path === route.path)
		? [route, { ...route, method: "HEAD" as const }]
		: [route],
);

function start(request: AppRequest): void {
	request.requestId = request.headers.get("cf-ray") ?? crypto.randomUUID();
	request.startedAt = Date.now();
}

// Successful reads and routine callbacks are not logged unless their handler adds fields: a
// lookup answers before every send and a callback arrives for every event, Workers Logs already
// records each invocation with its status, and a line each would double the log volume and cost
// more CPU than a lookup. Writes and every failure get their line.
const QUIET = new Set(
	SERVED.filter((route) => route.access !== "admin").map(
		(route) => `${route.method} ${route.path}`,
	),
);

function finish(answer: Response, request: AppRequest, env: Env): Response {
	const response = request.method === "HEAD" && answer.body ? new Response(null, answer) : answer;
	addCorsHeaders(response, request, env);
	response.headers.set("x-content-type-options", "nosniff");
	response.headers.set("cache-control", "no-store");
	response.headers.set("x-request-id", request.requestId);
	if (
		response.status < 400 &&
		!request.logFields &&
		QUIET.has(`${request.method} ${request.route}`)
	) {
		return response;
	}
	// The route pattern, never the path: a callback path holds a secret. A 5xx is the Worker's
	// own failure (a bad setting, storage down): an error for the operator, whoever asked.
	log(response.status >= 500 ? "error" : "info", "request", {
		requestId: request.requestId,
		method: request.method,
		route: request.route ?? null,
		status: response.status,
		ms: Date.now() - request.startedAt,
		...request.logFields,
	});
	return response;
}

/**
 * Answers a thrown value, and notes in the request's log line what went wrong: the error's code,
 * and a 5xx's message, which says what to fix (a bad setting's name, never its value). A 4xx's
 * message is left out: it may repeat what the caller sent, such as an address.
 */
function fail(error: unknown, request: IRequest): Response {
	const app = request as AppRequest;
	const answer = errorToResponse(error, String(app.requestId));
	const noted =
		error instanceof ApiError
			? { code: error.code, ...(error.status >= 500 ? { error: error.message } : {}) }
			: { code: "internal" };
	app.logFields = { ...app.logFields, ...noted };
	return answer;
}

/** The whole route table. */
export const router = Router<AppRequest, Args>({
	before: [start, answerPreflight],
	catch: fail,
	finally: [finish],
});

SERVED.forEach((route, i) => {
	const stages: RequestHandler<AppRequest, Args>[] =
		route.access === "read" || route.access === "admin" ? [requireRole(route.access)] : [];
	if (stages.length > 0) stages.push(route.query ? takeQuery : refuseQuery);
	if (stages.length > 0 && !route.body) stages.push(refuseBody);
	router[route.method.toLowerCase() as Lowercase<typeof route.method>](
		route.path,
		...stages,
		route.handler,
	);
	// A fixed path answers its other methods here, before a pattern such as
	// /v1/suppressions/:email can take it for an address.
	if (!route.path.includes(":") && SERVED[i + 1]?.path !== route.path) {
		const allowed = SERVED.filter((other) => other.path === route.path).map((r) => r.method);
		router.all(route.path, () => {
			throw methodNotAllowed(allowed);
		});
	}
});
router.all("*", (request: AppRequest) => {
	const path = new URL(request.url).pathname;
	const allowed = router.routes
		.filter(([method, pattern]) => method !== "ALL" && pattern.test(path))
		.map(([method]) => method);
	throw allowed.length > 0 ? methodNotAllowed(allowed) : notFound();
});

/** 405 with `Allow`: the path exists under these methods. */
function methodNotAllowed(allowed: string[]): ApiError {
	return new ApiError(
		405,
		"method_not_allowed",
		`Use ${allowed.join(" or ")} on this path`,
		undefined,
		{
			Allow: allowed.join(", "),
		},
	);
}

const CALLBACK_PATH = "/v1/callbacks/tencent/";

/** More query parameters than any route takes (the most is nine), with room to spare. */
const MAX_QUERY_PARAMETERS = 100;

/**
 * Serves a request. A URL with more than {@link MAX_QUERY_PARAMETERS} query parameters is refused
 * before the router reads them: it gathers a repeated parameter by copying the values so far, so
 * thousands of repeats of one name would cost anyone, token or not, a hundred times a request's
 * CPU. A callback, which reads no query, goes on without it instead: what Tencent sends is never
 * refused for its URL. So does a path no route serves, which answers 404 as it would without.
 */
export function serve(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
	if (queryParameters(request.url) > MAX_QUERY_PARAMETERS) {
		const url = new URL(request.url);
		const route = router.routes.find(([, pattern]) => pattern.test(url.pathname))?.[3] ?? "*";
		if (url.pathname.startsWith(CALLBACK_PATH) || route === "*") {
			url.search = "";
			return router.fetch(new Request(url, request), env, ctx);
		}
		const app = request as AppRequest;
		start(app);
		// Its log line names the route pattern like any other.
		app.route = route;
		const error = new ApiError(
			400,
			"invalid_query",
			`A request takes at most ${MAX_QUERY_PARAMETERS} query parameters`,
		);
		return Promise.resolve(finish(fail(error, app), app, env));
	}
	return router.fetch(request, env, ctx);
}

/** How many `&`-separated parameters the URL's query holds (an upper bound: empty ones count). */
function queryParameters(url: string): number {
	const query = url.indexOf("?");
	if (query === -1) return 0;
	let count = 1;
	for (let i = url.indexOf("&", query); i !== -1; i = url.indexOf("&", i + 1)) count++;
	return count;
}
