import * as z from "zod/mini";
import { emailProblem } from "../email";
import { json } from "../errors";
import { isoTime } from "../events/event";
import { parseQuery, type RawQuery } from "../query";
import { emailFromPath } from "../validate";
import { eraseAddress, readHistory } from "./api-store";
import { syncEdge } from "./edge";

interface RouteRequest {
	params: Record<string, string | undefined>;
	query: RawQuery;
	requestId: string;
}

/** `GET /v1/suppressions/{email}/history`: every change to the address's entries, oldest first. */
export async function historyRoute(request: RouteRequest, env: Env): Promise<Response> {
	// Any address stored can be read back and erased, even one a callback would now refuse.
	const email = emailFromPath(request.params.email, emailProblem);
	const rows = await readHistory(env.DB, email);
	return json({ email, history: rows.map((row) => ({ ...row, at: isoTime(row.at) })) });
}

/** Query of `DELETE /v1/addresses/{email}`. */
export const eraseQuery = z.strictObject({
	suppressions: z._default(z.enum(["true", "false"], { error: "must be true or false" }), "false"),
});

/**
 * `DELETE /v1/addresses/{email}`: erases the address's stored events. Its suppression entries
 * stay unless `suppressions=true`, so an erased person is still never mailed.
 */
export async function eraseRoute(
	request: RouteRequest,
	env: Env,
	ctx: ExecutionContext,
): Promise<Response> {
	const email = emailFromPath(request.params.email, emailProblem);
	const withSuppressions = parseQuery(eraseQuery, request.query).suppressions === "true";
	const at = Math.floor(Date.now() / 1000);
	const erased = await eraseAddress(env.DB, email, withSuppressions, at);
	if (withSuppressions) ctx.waitUntil(syncEdge(env, [email], at, request.requestId));
	return json({
		email,
		eventsDeleted: erased.events,
		suppressionsDeleted: withSuppressions ? erased.entries : 0,
	});
}
