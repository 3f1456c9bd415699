import { loadSettings } from "./config";

const ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE";
const ALLOWED_HEADERS = "authorization, content-type";
// Headers of API answers a browser's script may read beyond the CORS-safelisted ones.
const EXPOSED_HEADERS = "x-request-id, retry-after, www-authenticate, allow, content-disposition";

/** Browsers may call the API only from the origins `CORS_ORIGINS` lists, and never the callback. */
function allowedOrigin(request: Request, env: object): string | null {
	const origin = request.headers.get("origin");
	if (!origin) return null;
	const path = new URL(request.url).pathname;
	if (!path.startsWith("/v1/") || path.startsWith("/v1/callbacks/")) return null;
	try {
		return loadSettings(env).corsOrigins.includes(origin) ? origin : null;
	} catch {
		// A bad setting is reported by the route itself; CORS just stays off.
		return null;
	}
}

/**
 * A `before` stage that answers a CORS preflight from an allowed origin; anything else goes on
 * (an OPTIONS request without an allowed origin ends as 405).
 */
export function answerPreflight(request: Request, env: object): Response | undefined {
	if (request.method !== "OPTIONS") return undefined;
	const origin = allowedOrigin(request, env);
	if (!origin) return undefined;
	return new Response(null, {
		status: 204,
		headers: {
			"access-control-allow-origin": origin,
			"access-control-allow-methods": ALLOWED_METHODS,
			"access-control-allow-headers": ALLOWED_HEADERS,
			"access-control-max-age": "600",
		},
	});
}

/** Adds the CORS headers to an answer (a preflight's too) for an allowed origin; none otherwise. */
export function addCorsHeaders(response: Response, request: Request, env: object): void {
	const origin = allowedOrigin(request, env);
	if (!origin) return;
	response.headers.set("access-control-allow-origin", origin);
	response.headers.set("access-control-expose-headers", EXPOSED_HEADERS);
	response.headers.append("vary", "Origin");
}
