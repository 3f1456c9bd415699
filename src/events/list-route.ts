import * as z from "zod/mini";
import { emailProblem, normalizeEmail } from "../email";
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
import { renderEvent } from "./event";
import { type EventCursor, listEvents } from "./store";

const emailParam = z.pipe(
	z.string(),
	z.pipe(
		z.transform(normalizeEmail),
		z.string().check(
			z.superRefine((value, ctx) => {
				const problem = emailProblem(value);
				if (problem) ctx.addIssue({ code: "custom", input: value, message: problem });
			}),
		),
	),
);

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

/** Query of `GET /v1/events`. */
export const eventsQuery = z.strictObject({
	email: z.optional(emailParam),
	bulkId: z.optional(z.string().check(z.maxLength(512))),
	messageId: z.optional(z.string().check(z.maxLength(998))),
	event: z.optional(z.enum(EVENT_TYPES, { error: `must be one of ${EVENT_TYPES.join(", ")}` })),
	fromDomain: z.optional(z.pipe(z.string().check(z.maxLength(253)), z.transform(normalizeEmail))),
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
