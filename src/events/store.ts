import { parseJson } from "../json";
import { rowsThatFit } from "../query";
import type { StoredEvent } from "./event";

const COLUMNS = {
	id: "id",
	event: "event",
	email: "email",
	bulkId: "bulk_id",
	messageId: "message_id",
	taskId: "task_id",
	templateId: "template_id",
	appId: "app_id",
	from: "from_address",
	fromDomain: "from_domain",
	bounceType: "bounce_type",
	reason: "reason",
	link: "link",
	userAgent: "user_agent",
	subject: "subject",
	occurredAt: "occurred_at",
	sentAt: "sent_at",
	receivedAt: "received_at",
	custom: "custom",
	extra: "extra",
} as const satisfies Record<keyof StoredEvent, string>;

type Field = keyof typeof COLUMNS;
const FIELDS = Object.keys(COLUMNS) as Field[];

// The condition of migration 0007's trigger, which queues the address in soft_bounce_recheck: so
// the callback learns, without another statement, which addresses it must decide again.
const DELIVERED_DURING_SOFT_ENTRY = `event = 'delivered' AND EXISTS (SELECT 1 FROM suppressions AS s
	WHERE s.email = events.email AND s.list = 'bounce' AND s.scope = '*' AND s.origin = 'soft'
		AND s.expires_at > events.received_at)`;

const INSERT_INTO = `INSERT INTO events (${FIELDS.map((field) => COLUMNS[field]).join(", ")})`;
const INSERT_RESULT = `ON CONFLICT (id) DO NOTHING
RETURNING id, iif(${DELIVERED_DURING_SOFT_ENTRY}, email, NULL) AS recheck`;

// Up to five events (D1 binds at most 100 parameters per statement, 20 columns each) go in as
// bound parameters; unpacking them from JSON with `->>` cost about 100 µs more CPU per event in
// local workerd (`npm run bench`). Larger requests travel as one JSON parameter unpacked by
// json_each, so a request of any size stays one statement (the Free plan allows 50 queries per
// invocation). WHERE true keeps SQLite from reading ON CONFLICT as a join constraint.
const MAX_BOUND_ROWS = Math.floor(100 / FIELDS.length);
const ROW = `(${FIELDS.map(() => "?").join(", ")})`;
const INSERT_BOUND = Array.from(
	{ length: MAX_BOUND_ROWS },
	(_, i) => `${INSERT_INTO}
VALUES ${Array.from({ length: i + 1 }, () => ROW).join(", ")}
${INSERT_RESULT}`,
);
const INSERT_JSON = `${INSERT_INTO}
SELECT ${FIELDS.map((field) => `value ->> '${field}'`).join(", ")}
FROM json_each(?1) WHERE true
${INSERT_RESULT}`;

/** A column's value as stored: `custom` and `extra` as JSON text, NULL when empty. */
function columnValue(event: StoredEvent, field: Field): unknown {
	const value = event[field];
	if (field === "custom" || field === "extra") {
		return Object.keys(value as object).length > 0 ? JSON.stringify(value) : null;
	}
	return value ?? null;
}

/**
 * The statement that inserts `events`, skipping any already stored (same id). It returns the ids
 * it inserted, and with each delivery that arrived while its address had a live soft-bounce
 * entry, that address as `recheck`. Meant to go into the request's `DB.batch()`.
 */
export function insertEvents(db: D1Database, events: StoredEvent[]): D1PreparedStatement {
	if (events.length <= MAX_BOUND_ROWS) {
		const values = events.flatMap((event) => FIELDS.map((field) => columnValue(event, field)));
		return db.prepare(INSERT_BOUND[events.length - 1] as string).bind(...values);
	}
	const rows = events.map((event) =>
		Object.fromEntries(FIELDS.map((field) => [field, columnValue(event, field)])),
	);
	return db.prepare(INSERT_JSON).bind(JSON.stringify(rows));
}

/** Filters of `GET /v1/events`; all optional, combined with AND. */
export interface EventFilters {
	email?: string;
	bulkId?: string;
	messageId?: string;
	event?: string;
	fromDomain?: string;
	/** Unix seconds, inclusive. */
	since?: number;
	/** Unix seconds, exclusive. */
	until?: number;
}

/** Position after the last event of a page: newest first, so older than this. */
export interface EventCursor {
	occurredAt: number;
	seq: number;
}

type EventRow = { [K in (typeof COLUMNS)[Field]]: unknown } & { seq: number };

/**
 * One page of stored events, newest first, and the cursor of the next page (null on the last).
 */
export async function listEvents(
	db: D1Database,
	filters: EventFilters,
	limit: number,
	after?: EventCursor,
): Promise<{ events: StoredEvent[]; next: EventCursor | null }> {
	const where: string[] = [];
	const params: unknown[] = [];
	const equal = {
		email: "email",
		bulkId: "bulk_id",
		messageId: "message_id",
		event: "event",
		fromDomain: "from_domain",
	} as const;
	// Of the indexes these filters can use, SQLite picks one whose order fits the page's, so it
	// read a whole bulk send for one address or message in it. A unary + keeps a column's index out
	// of the plan: a message has a few events, an address fewer than a bulk send.
	const unindexed = new Set<string>();
	if (filters.messageId !== undefined) unindexed.add("email").add("bulkId");
	if (filters.email !== undefined) unindexed.add("bulkId");
	for (const [field, column] of Object.entries(equal)) {
		const value = filters[field as keyof typeof equal];
		if (value !== undefined) {
			where.push(`${unindexed.has(field) ? "+" : ""}${column} = ?`);
			params.push(value);
		}
	}
	if (filters.since !== undefined) {
		where.push("occurred_at >= ?");
		params.push(filters.since);
	}
	if (filters.until !== undefined) {
		where.push("occurred_at < ?");
		params.push(filters.until);
	}
	if (after) {
		// A row value, which SQLite turns into a range of the index: the next page starts where
		// the last ended instead of reading every page before it.
		where.push("(occurred_at, seq) < (?, ?)");
		params.push(after.occurredAt, after.seq);
	}
	// First the page's keys and sizes (one row more than the page, to tell whether another
	// follows), then the rows from the first to the last that fits MAX_EVENT_PAGE_BYTES (the
	// first always does), read as a range of the same index. As for refused callbacks, a row
	// deleted between the two reads is missing from the page, and one stored between them inside
	// its range (a late event) takes its place in it: the page still ends after `fit` rows, its
	// cursor the last of them, so it never holds more than `limit` and nothing is skipped.
	const filtered = where.length > 0 ? `WHERE ${where.join(" AND ")}` : "";
	const { results: sizes } = await db
		.prepare(
			`SELECT seq, occurred_at AS occurredAt, ${ROW_BYTES} AS size FROM events ${filtered}
			ORDER BY occurred_at DESC, seq DESC LIMIT ?`,
		)
		.bind(...params, limit + 1)
		.all<{ seq: number; occurredAt: number; size: number }>();
	const fit = rowsThatFit(sizes, limit, MAX_EVENT_PAGE_BYTES);
	const first = sizes[0];
	const last = sizes[fit - 1];
	if (!first || !last) return { events: [], next: null };
	const { results } = await db
		.prepare(
			`SELECT seq, ${FIELDS.map((field) => COLUMNS[field]).join(", ")} FROM events
			WHERE ${[...where, "(occurred_at, seq) <= (?, ?)", "(occurred_at, seq) >= (?, ?)"].join(" AND ")}
			ORDER BY occurred_at DESC, seq DESC LIMIT ?`,
		)
		.bind(...params, first.occurredAt, first.seq, last.occurredAt, last.seq, fit + 1)
		.all<EventRow>();
	const rows = results.slice(0, fit);
	// More rows than sized: late events joined the range, and the page ends at its `fit`th row.
	const cut = results.length > fit ? rows[fit - 1] : undefined;
	const next = cut
		? { occurredAt: Number(cut.occurred_at), seq: cut.seq }
		: sizes.length > fit
			? { occurredAt: Number(last.occurredAt), seq: last.seq }
			: null;
	return { events: rows.map(rowToEvent), next };
}

/**
 * The most bytes of stored text one page of events carries. One event may take up to the
 * callback's 256 KiB (a large `extra`), so a page of 1000 of them would be 256 MiB, twice a
 * Worker's 128 MB before it is even parsed and rendered: a page stops before the event that would
 * pass this, and its cursor leads on from there. A page of 1000 ordinary events (about 1 KB each)
 * is far below it.
 */
const MAX_EVENT_PAGE_BYTES = 4 * 1024 * 1024;

// The bytes of a row's text, as SQLite stores it (NULL as 0).
const ROW_BYTES = FIELDS.map(
	(field) => `coalesce(length(CAST(${COLUMNS[field]} AS BLOB)), 0)`,
).join(" + ");

function rowToEvent(row: EventRow): StoredEvent {
	const event = Object.fromEntries(FIELDS.map((field) => [field, row[COLUMNS[field]]]));
	return {
		...event,
		custom: typeof row.custom === "string" ? JSON.parse(row.custom) : {},
		extra: typeof row.extra === "string" ? parseJson(row.extra) : {},
	} as StoredEvent;
}
