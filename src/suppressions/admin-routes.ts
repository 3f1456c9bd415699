import * as z from "zod/mini";
import { readJson } from "../body";
import { emailProblem } from "../email";
import { ApiError, json } from "../errors";
import { parseQuery, type RawQuery, timeValue } from "../query";
import { emailFromPath, parseBody, reasonField } from "../validate";
import { putEntry, removeEntries } from "./api-store";
import { syncEdge } from "./edge";
import { lookupResult, renderEntry } from "./entry";
import { listField, scopeField } from "./fields";
import { ANY_SCOPE } from "./policy";
import { readEntries } from "./store";

interface RouteRequest extends Request {
	params: Record<string, string | undefined>;
	query: RawQuery;
	requestId: string;
}

const now = (): number => Math.floor(Date.now() / 1000);

// Defaults of fields that transform are prefaults (the value as a client would send it), so that
// the OpenAPI document shows them: zod leaves a transform's default out of the input's schema.
export const putBody = z.strictObject({
	list: z._default(listField, "manual"),
	scope: z.prefault(scopeField, ANY_SCOPE),
	reason: z.prefault(reasonField, null),
	expiresAt: z.prefault(z.nullable(timeValue), null),
});

/** The lookup answer for an address straight from D1, as PUT answers it. */
async function currentLookup(env: Env, email: string, at: number) {
	const entries = (await readEntries(env.DB, [email], at)).get(email) ?? [];
	return lookupResult(email, entries.map(renderEntry), at);
}

/**
 * Largest PUT body: a reason of 4096 characters and a scope of 253, each character escaped as
 * `\uXXXX` (six bytes, as Python's json.dumps writes anything beyond ASCII), fit with room.
 */
const MAX_PUT_BYTES = 64 * 1024;

/**
 * `PUT /v1/suppressions/{email}`: adds or updates an operator's entry (idempotent) and answers
 * the address's lookup result; the KV copy follows in the background, changed or not.
 */
export async function putRoute(
	request: RouteRequest,
	env: Env,
	ctx: ExecutionContext,
): Promise<Response> {
	const email = emailFromPath(request.params.email);
	// Every field has a default, so no body at all adds a manual entry for every sender.
	const body = parseBody(putBody, await readJson(request, MAX_PUT_BYTES, {}));
	const at = now();
	if (body.expiresAt !== null && body.expiresAt <= at) {
		throw new ApiError(400, "invalid_request", "The request body is not valid", [
			{ path: "expiresAt", message: "must be in the future" },
		]);
	}
	await putEntry(env.DB, email, body, at);
	// Even when this PUT changed nothing: it may repeat one that failed after D1 committed it (D1
	// can lose a write's answer), which wrote no key. PUTs are rare; a key write each is cheap.
	ctx.waitUntil(syncEdge(env, [email], at, request.requestId));
	return json(await currentLookup(env, email, at));
}

export const deleteQuery = z.strictObject({
	list: z.optional(listField),
	scope: z.optional(
		scopeField.check(
			z.describe(
				"\"*\" or a sender domain, compared with entries' scopes as a lookup's fromDomain is: case, one trailing dot and an IDN's Unicode or punycode (xn--) spelling do not matter",
			),
		),
	),
});

/**
 * `DELETE /v1/suppressions/{email}?list=&scope=`: removes the matching entries (all without a
 * filter) and records the removal, so an event older than it never brings an entry back.
 */
export async function deleteRoute(
	request: RouteRequest,
	env: Env,
	ctx: ExecutionContext,
): Promise<Response> {
	// Any address stored, even one a callback or PUT would now refuse, can be removed.
	const email = emailFromPath(request.params.email, emailProblem);
	const filter = parseQuery(deleteQuery, request.query);
	const at = now();
	const removed = await removeEntries(env.DB, email, filter, at);
	ctx.waitUntil(syncEdge(env, [email], at, request.requestId));
	return json({ email, removed });
}
