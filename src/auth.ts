import { loadSettings, requireTokens } from "./config";
import { ApiError } from "./errors";

const encoder = new TextEncoder();

async function digest(value: string): Promise<ArrayBuffer> {
	return crypto.subtle.digest("SHA-256", encoder.encode(value));
}

// Digests of configured tokens, computed once per isolate: a request then hashes only its own.
const tokenDigests = new Map<string, Promise<ArrayBuffer>>();

function tokenDigest(token: string): Promise<ArrayBuffer> {
	let cached = tokenDigests.get(token);
	if (!cached) {
		cached = digest(token);
		tokenDigests.set(token, cached);
	}
	return cached;
}

/**
 * Whether `candidate` equals one of `tokens`, in time independent of where they differ: both
 * sides are hashed to equal-length digests, compared with `timingSafeEqual`, and every token is
 * compared even after a match.
 *
 * @example
 * await matchesToken(params.token, settings.callbackTokens)
 */
export async function matchesToken(candidate: string, tokens: readonly string[]): Promise<boolean> {
	return matchesDigest(await digest(candidate), tokens);
}

async function matchesDigest(
	candidateDigest: ArrayBuffer,
	tokens: readonly string[],
): Promise<boolean> {
	let matched = false;
	for (const token of tokens) {
		const equal = crypto.subtle.timingSafeEqual(candidateDigest, await tokenDigest(token));
		matched = matched || equal;
	}
	return matched;
}

export type Role = "read" | "admin";

function unauthorized(message: string): ApiError {
	return new ApiError(401, "unauthorized", message, undefined, { "WWW-Authenticate": "Bearer" });
}

/**
 * Checks the request's bearer token for `role`: `ADMIN_TOKENS` may do everything,
 * `LOOKUP_TOKENS` may read.
 *
 * @throws ApiError 401 (missing or wrong token), 403 (read token on a write), 503 (not configured)
 */
export async function authorize(request: Request, env: object, role: Role): Promise<void> {
	const settings = loadSettings(env);
	if (role === "admin") requireTokens(settings.adminTokens, "ADMIN_TOKENS");
	else requireTokens([...settings.lookupTokens, ...settings.adminTokens], "LOOKUP_TOKENS");
	const header = request.headers.get("authorization") ?? "";
	const match = /^Bearer +(\S+) *$/i.exec(header);
	if (!match?.[1]) throw unauthorized("A bearer token is required");
	// Hashed once, then compared with both lists.
	const candidate = await digest(match[1]);
	if (await matchesDigest(candidate, settings.adminTokens)) return;
	if (await matchesDigest(candidate, settings.lookupTokens)) {
		if (role === "read") return;
		throw new ApiError(403, "forbidden", "This token may only read");
	}
	throw unauthorized("The bearer token is not valid");
}
