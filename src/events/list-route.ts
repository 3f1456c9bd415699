import * as z from "zod/mini";

import { json } from "../errors";
import {
	decodeCursor,
	encodeCursor,
	limitParam,
	parseQuery,
	type RawQuery,
	timeParam,
} from "../query";
import { EVENT_TYPES } from "../tencent/schema";
import { domainParam, emailField } from "../validate";
import { renderEvent } from "./event";
import { type EventCursor, listEvents } from "./store";

const cursorParam = z.pipe(
	z.string(),
	z.transform((raw, ctx): EventCursor => {
		const parts = decodeCursor(raw);
		const [occurredAt, seq] = parts ?? [];
		if (parts?.length !== 2 || !Number.isSafeInteger(occurredAt) || !Number.isSafeInteger(seq)) {
			ctx.issues.push({ code: "custom", input: raw, message: "is not a cursor this API issued" });
			return z.NEVER;
		}
		return { occurredAt: Number(occurredAt), seq: Number(seq) };
	}),
);

/**
 * A filter on a text field, which events store trimmed and never empty. Not empty is a pattern,
 * not a minimum length: the document's schema checks the value as sent, before the trim, and so
 * must refuse white space alone as the Worker does.
 */
function storedText(max: number) {
	return z
		.string()
		.check(
			z.trim(),
			z.regex(/\S/, { error: "must not be empty" }),
			z.maxLength(max, { error: `must be at most ${max} characters` }),
		);
}

/** Query of `GET /v1/events`. */
export const eventsQuery = z.strictObject({
	email: z.optional(emailField),
	bulkId: z.optional(storedText(512)),
	messageId: z.optional(storedText(998)),
	event: z.optional(z.enum(EVENT_TYPES, { error: `must be one of ${EVENT_TYPES.join(", ")}` })),
	fromDomain: z.optional(domainParam),
	since: z.optional(timeParam),
	until: z.optional(timeParam),
	cursor: z.optional(cursorParam),
	limit: limitParam,
});

/** `GET /v1/events`: stored events, newest first, filtered and paged. */
export async function listEventsRoute(request: { query: RawQuery }, env: Env): Promise<Response> {
	const { cursor, limit, ...filters } = parseQuery(eventsQuery, request.query);
	const page = await listEvents(env.DB, filters, limit, cursor);
	return json({
		events: page.events.map(renderEvent),
		cursor: page.next ? encodeCursor([page.next.occurredAt, page.next.seq]) : null,
	});
}
