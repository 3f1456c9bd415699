import * as z from "zod/mini";
import { mailboxProblem, normalizeEmail } from "../email";
import { wellFormed } from "../validate";

/** Event types Tencent documents; `processed` appears only on older pages. */
export const EVENT_TYPES = [
	"processed",
	"deferred",
	"delivered",
	"dropped",
	"open",
	"click",
	"bounce",
	"spamreport",
	"unsubscribe",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Tencent's numeric `eventid` (added 2025) for each event type that has one. */
const EVENT_IDS: Record<number, EventType> = {
	1: "delivered",
	2: "dropped",
	3: "bounce",
	4: "open",
	5: "click",
	6: "spamreport",
	7: "unsubscribe",
	8: "deferred",
};

/** 9999-12-31T23:59:59Z: a larger "timestamp" is not a date (often milliseconds by mistake). */
export const MAX_UNIX_SECONDS = 253_402_300_799;

/** A well-formed string of at most `max` characters. */
function string(max: number) {
	return z
		.string({ error: (issue) => (issue.input === undefined ? "is required" : "must be a string") })
		.check(z.maxLength(max, { error: `must be at most ${max} characters` }), wellFormed);
}

/** An optional string; null is accepted as absent. */
function text(max: number) {
	return z.optional(z.nullable(string(max)));
}

/** A non-negative integer, also as a string of digits (Tencent's types have varied). */
function count(max: number, what: string) {
	const error = `must be ${what}: an integer from 0 to ${max}, or a string of its digits`;
	return z.pipe(
		z.union([z.number(), z.string()], {
			error: (issue) => (issue.input === undefined ? "is required" : error),
		}),
		z.transform((value, ctx) => {
			const number =
				typeof value === "number" ? value : /^\d{1,16}$/.test(value) ? Number(value) : Number.NaN;
			if (Number.isSafeInteger(number) && number >= 0 && number <= max) return number;
			ctx.issues.push({ code: "custom", input: value, message: error });
			return z.NEVER;
		}),
	);
}

/**
 * An optional {@link count}: null, or a blank string (Tencent's placeholder for an absent field),
 * is absent.
 */
function optionalCount(max: number, what: string) {
	return z.optional(
		z.pipe(
			z.transform((value: unknown) =>
				typeof value === "string" && value.trim() === "" ? null : value,
			),
			z.nullable(count(max, what)),
		),
	);
}

const unixSeconds = count(MAX_UNIX_SECONDS, "Unix seconds");

const email = z.pipe(
	string(1024),
	z.pipe(
		z.transform(normalizeEmail),
		z.string().check(
			z.superRefine((value, ctx) => {
				const problem = mailboxProblem(value);
				if (problem) ctx.addIssue({ code: "custom", message: `${problem}`, input: value });
			}),
		),
	),
);

/**
 * Every field Tencent documents, in every spelling and value seen across its doc versions.
 * Fields it does not model are kept by the normaliser, not rejected.
 */
export const tencentEventSchema = z
	.object({
		event: z.enum(EVENT_TYPES, {
			error: (issue) =>
				issue.input === undefined ? "is required" : `must be one of ${EVENT_TYPES.join(", ")}`,
		}),
		email,
		timestamp: unixSeconds,
		bulkId: text(512),
		bulkid: text(512),
		reason: text(4096),
		bounceType: z.optional(
			z.nullable(
				z.enum(["hard_bounce", "soft_bounce", "hard", "soft", ""], {
					error: 'must be one of "hard_bounce", "soft_bounce", "hard", "soft" or ""',
				}),
			),
		),
		username: z.optional(
			z.nullable(
				z.union([string(64), count(Number.MAX_SAFE_INTEGER, "an appId")], {
					error: "must be an appId",
				}),
			),
		),
		from: text(320),
		fromDomain: text(253),
		templateId: optionalCount(Number.MAX_SAFE_INTEGER, "a template id"),
		link: text(8192),
		useragent: text(2048),
		subject: text(4096),
		messageId: text(998),
		sentTimestamp: optionalCount(MAX_UNIX_SECONDS, "Unix seconds"),
		eventid: optionalCount(Number.MAX_SAFE_INTEGER, "an event id"),
		taskId: optionalCount(Number.MAX_SAFE_INTEGER, "a task id"),
	})
	.check(
		z.superRefine((value, ctx) => {
			if (value.eventid != null && EVENT_IDS[value.eventid] !== value.event) {
				const expected = EVENT_IDS[value.eventid];
				ctx.addIssue({
					code: "custom",
					path: ["eventid"],
					input: value.eventid,
					message: expected
						? `is ${value.eventid} (${expected}) but event is ${value.event}`
						: `is ${value.eventid}, which is no known event id`,
				});
			}
			// Blank is absent (as the normaliser reads it), so only two real ids can disagree.
			const [bulkId, bulkid] = [value.bulkId?.trim(), value.bulkid?.trim()];
			if (bulkId && bulkid && bulkId !== bulkid) {
				ctx.addIssue({
					code: "custom",
					path: ["bulkid"],
					input: value.bulkid,
					message: "disagrees with bulkId",
				});
			}
		}),
	);

export type TencentEvent = z.infer<typeof tencentEventSchema>;

/** The field names the schema models; anything else is kept in `custom` or `extra`. */
export const MODELED_FIELDS: ReadonlySet<string> = new Set(Object.keys(tencentEventSchema.shape));

/** SMTP headers set at send time come back as top-level fields with this prefix. */
export const CUSTOM_FIELD_PREFIX = "x-tencentcloudses-cb-";
