import * as z from "zod/mini";
import { LISTS } from "./suppressions/policy";
import { EVENT_TYPES } from "./tencent/schema";

// Response shapes for the OpenAPI document. Requests are validated by the schemas the routes
// import; these describe what the API answers, in the same vocabulary.

const time = z.string().check(z.regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/));
const nullableString = z.nullable(z.string());
const cursor = z.nullable(z.string());

export const errorResponse = z.object({
	error: z.object({
		code: z.string(),
		message: z.string(),
		issues: z.optional(
			z.array(z.object({ path: z.string(), message: z.string(), index: z.optional(z.int()) })),
		),
	}),
});

export const okResponse = z.object({ ok: z.literal(true) });

/** The outline of GET /openapi.json: a JSON object, as OpenAPI 3.1 defines it. */
export const openApiResponse = z.looseObject({
	openapi: z.string(),
	info: z.looseObject({ title: z.string(), version: z.string() }),
	paths: z.record(z.string(), z.looseObject({})),
});

export const callbackResponse = z.object({
	ok: z.literal(true),
	received: z.int(),
	stored: z.int(),
	duplicates: z.int(),
});

const eventJson = z.object({
	id: z.string(),
	event: z.enum(EVENT_TYPES),
	email: z.string(),
	bulkId: nullableString,
	messageId: nullableString,
	taskId: z.nullable(z.int()),
	templateId: z.nullable(z.int()),
	appId: nullableString,
	from: nullableString,
	fromDomain: nullableString,
	bounceType: z.nullable(z.enum(["hard", "soft"])),
	reason: nullableString,
	link: nullableString,
	userAgent: nullableString,
	subject: nullableString,
	occurredAt: time,
	sentAt: z.nullable(time),
	receivedAt: time,
	custom: z.record(z.string(), z.string()),
	extra: z.record(z.string(), z.unknown()),
});

export const eventsResponse = z.object({ events: z.array(eventJson), cursor });

const entryJson = z.object({
	list: z.enum(LISTS),
	scope: z.string(),
	reason: nullableString,
	source: z.enum(["event", "api"]),
	eventCount: z.int(),
	lastEventAt: z.nullable(time),
	bulkId: nullableString,
	createdAt: time,
	updatedAt: time,
	expiresAt: z.nullable(time),
});

export const lookupResponse = z.object({
	email: z.string(),
	suppressed: z.boolean(),
	entries: z.array(entryJson),
});

export const checkResponse = z.object({
	results: z.array(
		z.object({
			email: z.string(),
			normalized: z.string(),
			deliverable: z.boolean(),
			suppressed: z.optional(z.boolean()),
			lists: z.optional(z.array(z.enum(LISTS))),
			invalid: z.optional(z.literal(true)),
		}),
	),
	deliverableCount: z.int(),
	suppressedCount: z.int(),
	invalidCount: z.int(),
});

export const entriesResponse = z.object({
	entries: z.array(z.extend(entryJson, { email: z.string() })),
	cursor,
});

export const removedResponse = z.object({ email: z.string(), removed: z.int() });

export const historyResponse = z.object({
	email: z.string(),
	history: z.array(
		z.object({
			at: time,
			action: z.enum(["added", "renewed", "removed", "expired"]),
			list: z.enum(LISTS),
			scope: z.string(),
			source: z.enum(["event", "api", "cron"]),
			eventId: nullableString,
			note: nullableString,
		}),
	),
});

export const importResponse = z.object({
	imported: z.int(),
	unchanged: z.int(),
	failed: z.array(z.object({ line: z.int(), message: z.string() })),
});

const counts = z.record(z.string(), z.int());
export const statsResponse = z.object({
	since: time,
	until: time,
	fromDomain: nullableString,
	days: z.array(z.object({ day: z.string(), counts })),
	totals: counts,
	bounceRate: z.nullable(z.number()),
	complaintRate: z.nullable(z.number()),
});

export const rejectedResponse = z.object({
	rejected: z.array(
		z.object({
			id: z.string(),
			receivedAt: time,
			status: z.int(),
			code: z.string(),
			message: z.string(),
			issues: z.nullable(z.array(z.unknown())),
			contentType: nullableString,
			bodyBytes: z.int(),
			truncated: z.boolean(),
			body: z.string(),
			bodyEncoding: z.enum(["utf-8", "base64"]),
			replayedAt: z.nullable(time),
			replayStored: z.nullable(z.int()),
		}),
	),
	cursor,
});

export const replayResponse = z.extend(callbackResponse, { id: z.string() });

export const eraseResponse = z.object({
	email: z.string(),
	eventsDeleted: z.int(),
	suppressionsDeleted: z.int(),
});
