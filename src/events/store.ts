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

// The whole request's events travel as one JSON parameter and are unpacked by json_each, so a
// request of any size is one statement with one bound parameter (D1 allows 100 per statement).
// WHERE true keeps SQLite from reading ON CONFLICT as a join constraint.
const INSERT_EVENTS = `INSERT INTO events (${FIELDS.map((field) => COLUMNS[field]).join(", ")})
SELECT ${FIELDS.map((field) => `value ->> '${field}'`).join(", ")}
FROM json_each(?1) WHERE true
ON CONFLICT (id) DO NOTHING
RETURNING id`;

/**
 * The statement that inserts `events`, skipping any already stored (same id), and returns the
 * ids it inserted. Meant to go into the request's single `DB.batch()`.
 */
export function insertEvents(db: D1Database, events: StoredEvent[]): D1PreparedStatement {
	const rows = events.map((event) => ({
		...event,
		custom: Object.keys(event.custom).length > 0 ? JSON.stringify(event.custom) : null,
		extra: Object.keys(event.extra).length > 0 ? JSON.stringify(event.extra) : null,
	}));
	return db.prepare(INSERT_EVENTS).bind(JSON.stringify(rows));
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
	for (const [field, column] of Object.entries(equal)) {
		const value = filters[field as keyof typeof equal];
		if (value !== undefined) {
			where.push(`${column} = ?`);
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
		where.push("(occurred_at < ? OR (occurred_at = ? AND seq < ?))");
		params.push(after.occurredAt, after.occurredAt, after.seq);
	}
	const sql = `SELECT seq, ${FIELDS.map((field) => COLUMNS[field]).join(", ")} FROM events
${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
ORDER BY occurred_at DESC, seq DESC LIMIT ?`;
	const { results } = await db
		.prepare(sql)
		.bind(...params, limit + 1)
		.all<EventRow>();
	const page = results.slice(0, limit);
	const last = page[page.length - 1];
	const next =
		results.length > limit && last ? { occurredAt: Number(last.occurred_at), seq: last.seq } : null;
	return { events: page.map(rowToEvent), next };
}

function rowToEvent(row: EventRow): StoredEvent {
	const event = Object.fromEntries(FIELDS.map((field) => [field, row[COLUMNS[field]]]));
	return {
		...event,
		custom: typeof row.custom === "string" ? JSON.parse(row.custom) : {},
		extra: typeof row.extra === "string" ? JSON.parse(row.extra) : {},
	} as StoredEvent;
}
