import { normalizeEmail, normalizeFrom, senderDomain } from "../email";
import { ApiError, type Issue, MAX_ISSUES } from "../errors";
import type { StoredEvent } from "../events/event";
import { isRawJson } from "../json";
import { eventKey, unmodeledProblems } from "./raw";
import {
	CUSTOM_FIELD_PREFIX,
	MODELED_FIELDS,
	type TencentEvent,
	tencentEventSchema,
} from "./schema";
import { decodeSubject } from "./subject";

const MAX_CUSTOM_LENGTH = 4096;
/** Characters of an issue's path kept: a field name may be as long as the body, and is stored. */
const MAX_ISSUE_PATH = 200;

/**
 * Validates a parsed callback body (one event object or an array of them) and normalises every
 * event. All or nothing: one bad event rejects the request with every problem found, each with
 * its field path and, for arrays, the event's index.
 *
 * @throws ApiError 400 `invalid_event`
 * @example
 * const events = await parseCallback(JSON.parse(body), 100, nowSeconds);
 */
export async function parseCallback(
	body: unknown,
	maxEvents: number,
	receivedAt: number,
): Promise<StoredEvent[]> {
	const isArray = Array.isArray(body);
	const items: unknown[] = isArray ? body : [body];
	if (isArray && (items.length === 0 || items.length > maxEvents)) {
		throw invalid([
			{ path: "", message: `must hold 1 to ${maxEvents} events, holds ${items.length}` },
		]);
	}
	const issues: Issue[] = [];
	const valid: Array<{ received: object; event: TencentEvent }> = [];
	items.forEach((item, index) => {
		const problems = checkEvent(item);
		if (problems.issues.length > 0) {
			for (const issue of problems.issues) issues.push(isArray ? { ...issue, index } : issue);
		} else if (problems.event && problems.received) {
			valid.push({ received: problems.received, event: problems.event });
		}
	});
	if (issues.length > 0) throw invalid(issues.slice(0, MAX_ISSUES).map(shortenPath), issues.length);
	return Promise.all(
		valid.map(({ received, event }) => normaliseEvent(received, event, receivedAt)),
	);
}

function shortenPath(issue: Issue): Issue {
	if (issue.path.length <= MAX_ISSUE_PATH) return issue;
	// Never between the two halves of a surrogate pair, so the path stays well-formed.
	const high = issue.path.charCodeAt(MAX_ISSUE_PATH - 1);
	const end = high >= 0xd800 && high <= 0xdbff ? MAX_ISSUE_PATH - 1 : MAX_ISSUE_PATH;
	return { ...issue, path: `${issue.path.slice(0, end)}…` };
}

/** 400 listing `issues` (at most {@link MAX_ISSUES}), its message counting all `found`. */
function invalid(issues: Issue[], found = issues.length): ApiError {
	const noun = found === 1 ? "problem" : "problems";
	const listed = found > issues.length ? ` (the first ${issues.length} listed)` : "";
	return new ApiError(400, "invalid_event", `The callback has ${found} ${noun}${listed}`, issues);
}

interface Checked {
	issues: Issue[];
	received?: object;
	event?: TencentEvent;
}

function checkEvent(item: unknown): Checked {
	if (item === null || typeof item !== "object" || Array.isArray(item) || isRawJson(item)) {
		return { issues: [{ path: "", message: "must be an event object" }] };
	}
	const issues = unmodeledProblems(item, MODELED_FIELDS);
	for (const [key, value] of Object.entries(item)) {
		// A null header is absent, as any optional field's null is; `extra` keeps it as received.
		// One that is not well-formed Unicode is refused as such by unmodeledProblems above.
		if (!key.toLowerCase().startsWith(CUSTOM_FIELD_PREFIX) || value === null) continue;
		if (typeof value !== "string" || value.length > MAX_CUSTOM_LENGTH) {
			issues.push({
				path: key,
				message: `must be a string of at most ${MAX_CUSTOM_LENGTH} characters`,
			});
		}
	}
	const parsed = tencentEventSchema.safeParse(item);
	if (!parsed.success) {
		for (const issue of parsed.error.issues) {
			issues.push({ path: issue.path.map(String).join("."), message: issue.message });
		}
	}
	return parsed.success && issues.length === 0
		? { issues, received: item, event: parsed.data }
		: { issues };
}

/** Tencent sends "" for absent text fields; null means absent here. */
function present(value: string | null | undefined): string | null {
	const trimmed = value?.trim();
	return trimmed ? trimmed : null;
}

async function normaliseEvent(
	received: object,
	event: TencentEvent,
	receivedAt: number,
): Promise<StoredEvent> {
	const custom: Record<string, string> = {};
	const extra: Array<[string, unknown]> = [];
	for (const [key, value] of Object.entries(received)) {
		if (MODELED_FIELDS.has(key)) continue;
		if (key.toLowerCase().startsWith(CUSTOM_FIELD_PREFIX) && typeof value === "string") {
			custom[key] = value;
		} else extra.push([key, value]);
	}
	const from = present(event.from);
	const fromAddress = from === null ? null : normalizeFrom(from);
	// A domain is matched in the form addresses are (a lookup's fromDomain is too), so an
	// unsubscribe's scope equals its sender's domain however either spells it.
	const givenDomain = present(event.fromDomain);
	const fromDomain =
		givenDomain === null ? fromAddress && senderDomain(fromAddress) : normalizeEmail(givenDomain);
	const subject = present(event.subject);
	const bounceType = event.bounceType
		? event.bounceType.startsWith("hard")
			? "hard"
			: "soft"
		: null;
	return {
		id: await eventKey(received),
		event: event.event,
		email: event.email,
		bulkId: present(event.bulkId) ?? present(event.bulkid),
		messageId: present(event.messageId),
		taskId: event.taskId ?? null,
		templateId: event.templateId ?? null,
		appId: event.username == null ? null : present(String(event.username)),
		from: fromAddress,
		fromDomain: fromDomain ?? null,
		bounceType,
		reason: present(event.reason),
		link: present(event.link),
		userAgent: present(event.useragent),
		subject: subject === null ? null : decodeSubject(subject),
		occurredAt: event.timestamp,
		sentAt: event.sentTimestamp ?? null,
		receivedAt,
		custom,
		// fromEntries defines own properties, so a "__proto__" field is kept as data, not a prototype.
		extra: Object.fromEntries(extra),
	};
}
